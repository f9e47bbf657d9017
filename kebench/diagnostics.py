"""Collapse diagnostics of a weight edit: how far one step moved each edited matrix.

Model collapse under sequential editing shows in the edited matrices before it shows in the
metrics: updates grow, the matrix's norm drifts away from the unedited one, its spectrum
degenerates (the condition number climbs). `step_diagnostics` measures one matrix after one
step, in float64, from copies: the weights themselves are only read. Non-finite weights are
a `NumericalError`. The runner calls `record_step` after every step of every editor. `summary_line` condenses a run's records into the one line the CLI prints.

Keys of `step_diagnostics` (norms are Frobenius norms; W₀ the unedited matrix):

    update_norm      ‖ΔW‖ of this step
    rel_update       ‖ΔW‖ / ‖W_before‖
    norm_growth      ‖W_after‖ / ‖W_before‖ (1: this step kept the norm)
    cond             σ_max / σ_min of W_after (None: singular)
    total_growth     ‖W_after‖ / ‖W₀‖ over every live edit so far
    total_drift      ‖W_after − W₀‖ / ‖W₀‖
    cond_unedited    σ_max / σ_min of W₀
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from kebench.errors import NumericalError

#: significant digits kept in the results file
DIGITS = 6


def condition_number(weight: torch.Tensor) -> float | None:
    """σ_max / σ_min of a matrix (a tensor of more dimensions: flattened after the first), in float64.

    None when σ_min is zero (a singular matrix has no finite condition number, and JSON has no inf).
    """
    w = weight.detach().to(torch.float64)
    if w.ndim < 2:
        return None
    w = w.reshape(w.shape[0], -1)
    sv = torch.linalg.svdvals(w.T if w.shape[0] < w.shape[1] else w)  # tall: about twice as fast on CPU, same values
    smallest = float(sv[-1])
    return float(sv[0]) / smallest if smallest > 0 else None


def check_finite_weights(name: str, delta: torch.Tensor, after: torch.Tensor, where: str) -> None:
    """NumericalError naming `where` (the editor step) and the parameter if the update or the edited weights are not finite."""
    for what, tensor in (("the edited weights", after), ("the update", delta)):
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise NumericalError(
                f"{where}: {what} of {name} contain {bad} NaN/Inf entries of {tensor.numel()}; "
                "try a smaller learning rate or a larger covariance weight"
            )


@torch.no_grad()
def step_diagnostics(
    name: str,
    before: torch.Tensor,
    after: torch.Tensor,
    unedited: torch.Tensor | None = None,
    cond_unedited: float | None = None,
    where: str = "edit",
) -> dict[str, float | None]:
    """Diagnostics of one edited matrix after one step (keys: see the module docstring).

    before/after: the parameter as the step found and left it; unedited: as it was before the first
    edit still in force (None or `before` itself: this step is the first); cond_unedited: its
    condition number if already known (it is computed otherwise). `where` names the step in errors.
    """
    b = before.detach().to(torch.float64)
    a = after.detach().to(device=b.device, dtype=torch.float64)
    delta = a - b
    check_finite_weights(name, delta, a, where)
    norm_before, norm_after, update = float(b.norm()), float(a.norm()), float(delta.norm())
    first = unedited is None or unedited is before
    if first:
        norm_0, drift = norm_before, update
    else:
        w0 = unedited.detach().to(device=b.device, dtype=torch.float64)  # type: ignore[union-attr]
        norm_0, drift = float(w0.norm()), float((a - w0).norm())
    if cond_unedited is None:
        cond_unedited = condition_number(before if first else unedited)  # type: ignore[arg-type]
    found = {
        "update_norm": update,
        "rel_update": _ratio(update, norm_before),
        "norm_growth": _ratio(norm_after, norm_before),
        "cond": condition_number(a),
        "total_growth": _ratio(norm_after, norm_0),
        "total_drift": _ratio(drift, norm_0),
        "cond_unedited": cond_unedited,
    }
    return {k: _round(v) for k, v in found.items()}


def summary_line(editor_stats: Iterable[Mapping[str, Any]]) -> str | None:
    """One line over a run's steps (results' `editor_stats`): the largest norm growth, drift and
    condition number any edited matrix reached. None when no step recorded weight diagnostics."""
    rows = [
        (name, d)
        for step in editor_stats
        for name, d in ((step.get("stats") or {}).get("weight_diagnostics") or {}).items()
    ]
    if not rows:
        return None
    growth = max(d["total_growth"] or 0.0 for _, d in rows)
    drift = max(d["total_drift"] or 0.0 for _, d in rows)
    conds = [(d["cond"], d["cond_unedited"]) for _, d in rows if d["cond"] is not None]
    line = f"edited weights, largest over steps: norm growth x{growth:.4g}, drift {drift:.3g}"
    if conds:
        cond, cond_0 = max(conds, key=lambda c: c[0])
        line += f", condition number {cond:.4g}" + (f" (unedited {cond_0:.4g})" if cond_0 is not None else "")
    return line


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.{DIGITS}g}")


def record_step(handle: Any, earlier: Sequence[Any], where: str, cond_cache: dict[str, float | None]) -> None:
    """Put the collapse diagnostics of one editing step into `handle.stats["weight_diagnostics"]`.

    `handle` is the step's edit; only an edit that changes parameters in place (one with `originals`,
    the weights as the step found them) has any. `earlier`: the run's earlier steps, oldest first; a
    matrix's unedited value is the originals of the first of them that edited it. `cond_cache` keeps
    the unedited matrices' condition numbers across steps. On NaN/Inf the step is undone
    (`handle.restore()`) and NumericalError raised, naming `where` and the parameter."""
    originals = getattr(handle, "originals", None)
    if not originals:
        return
    params = dict(handle.model.named_parameters())
    found: dict[str, dict[str, float | None]] = {}
    try:
        for name, before in originals.items():
            unedited = next((h.originals[name] for h in earlier if name in (getattr(h, "originals", None) or {})), before)
            if name not in cond_cache:
                cond_cache[name] = condition_number(unedited)
            found[name] = step_diagnostics(name, before, params[name], unedited, cond_cache[name], where=where)
    except NumericalError:
        handle.restore()
        raise
    handle.stats["weight_diagnostics"] = found
