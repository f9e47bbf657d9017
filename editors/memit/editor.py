"""MEMIT (Meng et al., 2023): batch edits written into several MLP output projections.

Pipeline shared with AlphaEdit (`LocateThenEditEditor`), each step its own module:
context prefixes (contexts.py) → token rows (prompts.py) → target values δ at the last edit
layer (values.py) → per layer: keys (keys.py), remaining residual, closed-form update
(update.py), each written layer checkpointed (checkpoint.py). Subclasses supply only the solve (and any state kept across steps).
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from editors.memit.checkpoint import StepCheckpoint
from editors.memit.contexts import context_prefixes
from editors.memit.hparams import LocateEditHParams, MemitHParams
from editors.memit.keys import lower_states
from editors.memit.prompts import EditBatch, build_batch
from editors.memit.update import Solver, memit_delta, spread_updates
from editors.memit.values import TargetValues, fit_target_values
from kebench.data.case import EditRequest, unique_requests
from kebench.editor import Editor, WeightEditHandle, register_editor
from kebench.errors import ConfigError
from kebench.fit_cache import FitCache
from kebench.models.loaded import LoadedModel, exact_checksum
from kebench.stats import layer_covariance
from kebench.timing import Timer


class LocateThenEditEditor(Editor):
    """Fit δ at the last edit layer, then spread it over the layers with a closed-form solve."""

    hparams: LocateEditHParams

    def __init__(self, hparams: LocateEditHParams | None = None) -> None:
        super().__init__(hparams)
        self._covariance: dict[tuple[str, int], torch.Tensor] = {}
        self._prefixes: list[str] | None = None
        self._prefix_model: str | None = None

    # -- what subclasses provide --------------------------------------------------------
    @abstractmethod
    def solver(self, lm: LoadedModel) -> Solver:
        """The per-layer update rule ΔW = f(layer, keys, residual)."""

    def new_handle(self, lm: LoadedModel, names: list[str]) -> WeightEditHandle:
        return WeightEditHandle(lm.model, names)

    def after_update(
        self, lm: LoadedModel, batch: EditBatch, handle: WeightEditHandle, steps: StepCheckpoint | None = None
    ) -> None:
        """Called once the weights are written (AlphaEdit notes the batch for its key reads here);
        `steps` as in spread_updates."""

    def update_state(self) -> dict[str, torch.Tensor]:
        """Editor state the update depends on beyond weights, batch and values (part of its checkpoint key)."""
        return {}

    # -- shared resources -----------------------------------------------------------------
    def covariance(self, lm: LoadedModel, layers: Sequence[int] | None = None) -> dict[int, torch.Tensor]:
        """C₀ per edit layer: from memory, else the disk cache, else one corpus pass."""
        hp = self.hparams
        layers = list(hp.layers if layers is None else layers)
        missing = [l for l in layers if (lm.weights_sha256, l) not in self._covariance]
        if missing:
            found = layer_covariance(
                lm, missing, n_tokens=hp.stats_n_tokens, seq_len=hp.stats_seq_len, corpus=hp.stats_corpus
            )
            for layer, cov in found.items():
                self._covariance[(lm.weights_sha256, layer)] = cov
        return {l: self._covariance[(lm.weights_sha256, l)] for l in layers}

    def prefixes(self, lm: LoadedModel) -> list[str]:
        """The context prefixes, written once per model by the unedited model and then kept."""
        if self._prefixes is None or self._prefix_model != lm.weights_sha256:
            hp = self.hparams
            self._prefixes = context_prefixes(lm, hp.n_context_prefixes, hp.context_prefix_tokens, hp.seed)
            self._prefix_model = lm.weights_sha256
        return self._prefixes

    def prepare(self, lm: LoadedModel) -> None:
        """C₀ and the context prefixes come from the unedited model."""
        self.covariance(lm)
        self.prefixes(lm)

    def state_dict(self) -> dict[str, Any]:
        if self._prefixes is None:
            return {}
        return {"context_prefixes": list(self._prefixes), "model_sha256": self._prefix_model}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "context_prefixes" in state:
            self._prefixes = list(state["context_prefixes"])
            self._prefix_model = state["model_sha256"]

    # -- the edit -----------------------------------------------------------------------------
    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> WeightEditHandle:
        hp = self.hparams
        requests = unique_requests(requests)
        if not requests:
            raise ConfigError(f"{self.name}: no edit requests given")
        layers = list(hp.layers)
        if layers[-1] >= lm.adapter.num_layers:
            raise ConfigError(
                f"{self.name}: edit layers {layers} exceed the model's {lm.adapter.num_layers} layers; "
                f"set --hparam layers=[...] within 0..{lm.adapter.num_layers - 1}"
            )
        timer = Timer()
        with timer("stats"):
            self.covariance(lm)
        with timer("prefixes"):
            prefixes = self.prefixes(lm)
            batch = build_batch(lm.tokenizer, requests, prefixes)

        handle = self.new_handle(lm, [lm.adapter.mlp_out_param_name(l) for l in layers])
        try:
            weights = exact_checksum(lm.model) if hp.v_cache or hp.update_checkpoint else ""
            cache = FitCache("target_values", weights, lm.device.type) if hp.v_cache else None
            values = fit_target_values(lm, batch, layers[-1], hp, cache)
            timer.add("values", values.seconds)
            with timer("update"):
                steps = None
                if hp.update_checkpoint:
                    steps = StepCheckpoint(FitCache("update_steps", weights, lm.device.type), self.name,
                                           dataclasses.asdict(hp), batch, values, self.update_state())
                # the blocks below the lowest edit layer never change: their states are read once
                lower = lower_states(lm, batch, layers[0] - 1, hp.rows_per_pass) if layers[0] > 0 else None
                spread = spread_updates(
                    lm, batch, values, layers, self.solver(lm), hp.rows_per_pass, hp.per_prefix_keys, lower, steps
                )
                self.after_update(lm, batch, handle, steps)
                del lower
        except BaseException:
            handle.restore()
            raise
        times = timer.timings
        times["total"] = sum(times.values())
        handle.stats.update(edit_stats(requests, values, spread, times))
        return handle


def edit_stats(
    requests: Sequence[EditRequest], values: TargetValues, spread: dict[str, Any], times: dict[str, float]
) -> dict[str, Any]:
    """What the results file records about one apply()."""
    return {
        "n_edits": len(requests),
        **values.stats(),
        "delta_missing_frac": spread["delta_missing_frac"],
        "update_resumed_steps": spread["resumed_steps"],
        "layer_updates": spread["layers"],
        "time_s": {k: round(v, 3) for k, v in times.items()},
        "seconds_per_edit": round(times["total"] / len(requests), 3),
        "per_edit": [
            {
                "case_id": r.case_id,
                "converged": bool(values.converged[i]),
                "steps": int(values.steps[i]),
                "nll_end": round(float(values.nll_end[i]), 4),
                "delta_missing": round(spread["delta_missing"][i], 4),
            }
            for i, r in enumerate(requests)
        ],
    }


@register_editor
class MEMITEditor(LocateThenEditEditor):
    """MEMIT: ΔW = R Kᵀ (λ C₀ + K Kᵀ)⁻¹ at each edit layer."""

    name: ClassVar[str] = "memit"
    hparams_cls: ClassVar[type[MemitHParams]] = MemitHParams
    config_dir: ClassVar[Path | None] = Path(__file__).resolve().parent / "configs"
    hparams: MemitHParams

    def solver(self, lm: LoadedModel) -> Solver:
        cov = self.covariance(lm)
        weight = self.hparams.mom2_update_weight
        return lambda layer, keys, resid: memit_delta(keys, resid, cov[layer], weight)
