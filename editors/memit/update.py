"""Spreading the target residual over the edit layers, and MEMIT's closed-form update.

For edit layers l₁ < … < l_m (L = l_m), at layer lᵢ the residual still missing at L,
R = δ − (h_L,now − h_L,orig) (averaged over prefixes like the keys), is divided by the number of layers left (m − i) and written
into lᵢ's output projection by least squares against the keys read *after* the updates of
the layers below. MEMIT's solve, in float64:

    ΔW = R Kᵀ (λ C₀ + K Kᵀ)⁻¹        (K: [d_ff, n] keys, R: [d, n], C₀ = E[k kᵀ])

λ (mom2_update_weight) trades the new associations against preserving the outputs of
typical keys; it must scale with the key width d_ff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from editors.memit.checkpoint import StepCheckpoint
from editors.memit.keys import LowerStates, count_passes, edit_columns, read_rows, weighted_mean_per_edit
from editors.memit.prompts import EditBatch
from editors.memit.values import TargetValues
from kebench.editor import check_finite
from kebench.errors import NumericalError
from kebench.models.loaded import LoadedModel
from kebench.progress import progress_bar

#: solve(layer, keys [d_ff, n], residual [d, n]) -> ΔW [d, d_ff], all float64
Solver = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def memit_delta(keys: torch.Tensor, resid: torch.Tensor, cov: torch.Tensor, mom2_update_weight: float) -> torch.Tensor:
    """ΔW = R Kᵀ (λ C₀ + K Kᵀ)⁻¹ in float64 ([d, d_ff])."""
    k, r, c = keys.double(), resid.double(), cov.double()
    system = mom2_update_weight * c + k @ k.T
    x = solve_system(system, k, "MEMIT update")  # (λC₀ + KKᵀ)⁻¹ K, [d_ff, n]
    return check_finite("MEMIT update", r @ x.T)


def solve_system(a: torch.Tensor, b: torch.Tensor, what: str) -> torch.Tensor:
    """a⁻¹ b in float64; a singular system is a NumericalError, not garbage."""
    try:
        return torch.linalg.solve(a, b)
    except torch.linalg.LinAlgError:
        raise NumericalError(
            f"{what}: the linear system is singular; raise the covariance weight or the statistics' token count"
        ) from None


def apply_delta(lm: LoadedModel, layer: int, delta: torch.Tensor) -> None:
    """W_layer += ΔW, with ΔW given as [d, d_ff] (value by key) whatever the storage layout."""
    param = lm.adapter.mlp_out_weight(layer)
    stored = lm.adapter.from_value_by_key(check_finite(f"update of layer {layer}", delta))
    with torch.no_grad():
        param.add_(stored.to(device=param.device, dtype=param.dtype))


def spread_updates(
    lm: LoadedModel,
    batch: EditBatch,
    values: TargetValues,
    layers: Sequence[int],
    solve: Solver,
    rows_per_pass: int = 64,
    per_prefix: bool = False,
    lower: LowerStates | None = None,
    steps: StepCheckpoint | None = None,
) -> dict[str, object]:
    """Write the fitted deltas into the output projections of `layers` (ascending, top = values.layer).

    per_prefix: solve against every prefixed version of each key (see keys.edit_columns).
    lower: the rows' states below layers[0] (keys.lower_states), replayed in every key read.
    steps: where each layer's ΔW is stored once written, and read back by a resumed update.

    Returns per-layer diagnostics and how much of δ the edited model reaches at L.
    """
    layers = list(layers)
    if layers != sorted(set(layers)) or layers[-1] != values.layer:
        raise ValueError(f"edit layers {layers} must ascend and end at the fitted layer {values.layer}")
    top = values.layer
    rw = batch.rewrite_rows
    edit_rw, weight_rw = batch.edit[rw], batch.weight[rw]
    orig = values.row_h[rw]
    per_layer: list[dict[str, float]] = []
    start = time.perf_counter()
    passes = count_passes(batch, rows_per_pass)
    # one key read per layer and a last read at the top: long at 10k edits on a CPU, so show progress
    with progress_bar(f"writing updates into layers {','.join(map(str, layers))}", passes * (len(layers) + 1)) as bar:
        for i, layer in enumerate(layers):
            found = steps.load(f"delta.{layer}", ("delta",)) if steps is not None else None
            if found is not None:
                apply_delta(lm, layer, found["delta"])
                per_layer.append(found["meta"])
                bar.advance(passes)
                continue
            row_keys, h_now = read_rows(lm, batch, layer, top, rows_per_pass, lower, on_pass=bar.advance)
            row_resid = (values.delta[edit_rw] - (h_now - orig)).double() / (len(layers) - i)
            resid = edit_columns(batch, row_resid, per_prefix)
            delta = solve(layer, edit_columns(batch, row_keys, per_prefix).T, resid.T)
            apply_delta(lm, layer, delta)
            per_layer.append(
                {
                    "layer": layer,
                    "resid_norm": float(resid.norm(dim=1).mean()),
                    "update_norm": float(delta.norm()),
                }
            )
            if steps is not None:
                steps.save(f"delta.{layer}", {"delta": delta}, per_layer[-1])
        _, h_now = read_rows(lm, batch, top, top, rows_per_pass, lower, on_pass=bar.advance)
    moved = weighted_mean_per_edit(h_now - orig, edit_rw, weight_rw, batch.n_edits)
    missing = (values.delta - moved).norm(dim=1) / values.delta.norm(dim=1).clamp(min=1e-12)
    return {
        "layers": per_layer,
        "delta_missing_frac": float(missing.mean()),  # 0: the edited model reaches z at L exactly
        "delta_missing": missing.tolist(),  # per edit
        "update_seconds": time.perf_counter() - start,
        "resumed_steps": list(steps.resumed) if steps is not None else [],
    }
