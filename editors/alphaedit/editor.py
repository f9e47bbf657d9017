"""AlphaEdit (Fang et al., 2025): MEMIT's pipeline with the update projected onto the null space
of the preserved keys, and earlier edits' keys kept so sequential edits do not undo them.

The keys of applied edits (K_p K_pᵀ per layer) live on the editor instance, never in a
module global: two editors never share them, `state_dict()` checkpoints them, and
restoring an edit's handle takes its keys back out (a restored edit must not keep
constraining later ones — batch-mode runs restore after every batch). A batch's keys are read
only when a later batch or a checkpoint needs them (`record_keys`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from editors.alphaedit.hparams import AlphaEditHParams
from editors.alphaedit.null_space import null_space_projector
from editors.alphaedit.update import alphaedit_delta
from editors.memit.checkpoint import StepCheckpoint
from editors.memit.editor import LocateThenEditEditor
from editors.memit.keys import edit_keys, lower_states
from editors.memit.prompts import EditBatch
from editors.memit.update import Solver
from kebench.data.case import EditRequest
from kebench.editor import WeightEditHandle, register_editor
from kebench.errors import ConfigError
from kebench.models.loaded import LoadedModel


@dataclass
class _PendingKeys:
    """An applied batch whose keys AlphaEdit has not read yet (see `AlphaEditEditor.record_keys`)."""

    lm: LoadedModel
    batch: EditBatch
    handle: "AlphaEditHandle"
    steps: StepCheckpoint | None


class AlphaEditHandle(WeightEditHandle):
    """Restores the weights and removes this edit's keys from the editor's accumulated keys."""

    def __init__(self, editor: "AlphaEditEditor", model: torch.nn.Module, names: list[str]) -> None:
        super().__init__(model, names)
        self.editor = editor
        self.added_keys: dict[int, torch.Tensor] = {}  # layer -> K Kᵀ ([d_ff, d_ff]) of the keys recorded after the edit
        self.n_edits = 0

    def restore(self) -> None:
        if not self._restored and not self.editor.drop_pending(self) and self.added_keys:
            self.editor.forget_keys(self.added_keys, self.n_edits)
        super().restore()


@register_editor
class AlphaEditEditor(LocateThenEditEditor):
    """ΔW = R Kᵀ P (K Kᵀ P + K_p K_pᵀ P + L2·I)⁻¹ at each edit layer."""

    name: ClassVar[str] = "alphaedit"
    hparams_cls: ClassVar[type[AlphaEditHParams]] = AlphaEditHParams
    config_dir: ClassVar[Path | None] = Path(__file__).resolve().parent / "configs"
    hparams: AlphaEditHParams

    def __init__(self, hparams: AlphaEditHParams | None = None) -> None:
        super().__init__(hparams)
        self._projectors: dict[tuple[str, int], tuple[torch.Tensor, int]] = {}
        self.prior_keys: dict[int, torch.Tensor] = {}  # layer -> K_p K_pᵀ (float64) of applied edits
        self.n_prior_edits = 0
        self._pending: _PendingKeys | None = None  # the last batch, its keys not read yet

    def projector(self, lm: LoadedModel, layer: int) -> tuple[torch.Tensor, int]:
        """P for `layer` and the null space's dimension, computed once per model and layer."""
        key = (lm.weights_sha256, layer)
        if key not in self._projectors:
            cov = self.covariance(lm, [layer])[layer]
            self._projectors[key] = null_space_projector(cov, self.hparams.nullspace_threshold)
        return self._projectors[key]

    def solver(self, lm: LoadedModel) -> Solver:
        hp = self.hparams

        def solve(layer: int, keys: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
            projector, _ = self.projector(lm, layer)
            return alphaedit_delta(keys, resid, projector, self.prior_keys.get(layer), hp.L2)

        return solve

    def new_handle(self, lm: LoadedModel, names: list[str]) -> WeightEditHandle:
        return AlphaEditHandle(self, lm.model, names)

    def update_state(self) -> dict[str, torch.Tensor]:
        return {f"prior_keys.{l}": k for l, k in sorted(self.prior_keys.items())}

    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> WeightEditHandle:
        self.record_keys()  # the previous batch's keys constrain this one
        return super().apply(lm, requests)

    def after_update(
        self, lm: LoadedModel, batch: EditBatch, handle: WeightEditHandle, steps: StepCheckpoint | None = None
    ) -> None:
        """Note the batch for `record_keys`: its keys are read only once a later batch (or a
        checkpoint) needs them. A batch-mode run, whose single batch is restored before anything
        else is edited, never pays for reading them (a pass over all rows per edit layer, as many
        as the update itself makes)."""
        assert isinstance(handle, AlphaEditHandle)
        self._pending = _PendingKeys(lm, batch, handle, steps)  # apply() has recorded the previous batch
        self.n_prior_edits += batch.n_edits
        handle.n_edits = batch.n_edits
        handle.stats["null_space_dim"] = {l: self.projector(lm, l)[1] for l in self.hparams.layers}
        handle.stats["n_prior_edits"] = self.n_prior_edits

    def record_keys(self) -> None:
        """Add the last applied batch's keys, read from the edited model as the authors do, to K_p K_pᵀ.
        The weights must still be those that batch left (nothing else edited in between)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        hp, lm, batch, steps = self.hparams, pending.lm, pending.batch, pending.steps
        lower = None
        for layer in hp.layers:
            found = steps.load(f"keys.{layer}", ("gram",)) if steps is not None else None
            if found is None:
                if lower is None and hp.layers[0] > 0:
                    lower = lower_states(lm, batch, hp.layers[0] - 1, hp.rows_per_pass)
                keys = edit_keys(lm, batch, layer, hp.per_prefix_keys, hp.rows_per_pass, lower)
                gram = keys.T @ keys
                if steps is not None:
                    steps.save(f"keys.{layer}", {"gram": gram})
            else:
                gram = found["gram"]
            pending.handle.added_keys[layer] = gram
            self.prior_keys[layer] = self.prior_keys.get(layer, 0) + gram

    def drop_pending(self, handle: "AlphaEditHandle") -> bool:
        """Forget `handle`'s batch if its keys were never read (it is being restored); True if so."""
        if self._pending is None or self._pending.handle is not handle:
            return False
        self._pending = None
        self.forget_keys({}, handle.n_edits)
        return True

    def forget_keys(self, added: dict[int, torch.Tensor], n_edits: int) -> None:
        """Undo `after_update` for one restored edit of `n_edits` requests (`added`: K Kᵀ per layer)."""
        for layer, gram in added.items():
            self.prior_keys[layer] = self.prior_keys[layer] - gram
        self.n_prior_edits -= n_edits
        if self.n_prior_edits <= 0:  # nothing left: drop the rounding residue too
            self.prior_keys.clear()
            self.n_prior_edits = 0

    # -- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self.record_keys()
        state = super().state_dict()
        if self.prior_keys:
            state["layers"] = list(self.hparams.layers)
            state["prior_keys"] = {str(l): t.clone() for l, t in self.prior_keys.items()}
            state["n_prior_edits"] = self.n_prior_edits
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._pending = None
        if "prior_keys" not in state:
            self.prior_keys, self.n_prior_edits = {}, 0
            return
        if list(state["layers"]) != list(self.hparams.layers):
            raise ConfigError(
                f"AlphaEdit checkpoint was made for layers {state['layers']}, not {list(self.hparams.layers)}; "
                "resume with the same hyperparameters"
            )
        self.prior_keys = {int(l): t.to(torch.float64) for l, t in state["prior_keys"].items()}
        self.n_prior_edits = int(state["n_prior_edits"])
