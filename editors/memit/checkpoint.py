"""Per-step checkpoints of one update, so an interrupted 10,000-edit update resumes where it was.

An update's steps (each edit layer's ΔW, AlphaEdit's keys read after the edit) take up to an
hour each at 10,000 edits on a CPU, and a killed process would otherwise start the update over.
Every finished step is stored in the fit cache (kind "update_steps") under a key over all that
the update depends on: the unedited weights' exact bytes, the editor and its hyperparameters,
the batch's token rows, the fitted target values, and any editor state (AlphaEdit's earlier keys).
Replaying a stored ΔW is the same addition the fresh step makes, so a resumed update ends in the
same weights bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from editors.memit.prompts import EditBatch
from editors.memit.values import TargetValues
from kebench.fit_cache import FitCache


class StepCheckpoint:
    """Load and save the named steps of one update."""

    def __init__(
        self, cache: FitCache, editor: str, hparams: Mapping[str, Any], batch: EditBatch, values: TargetValues,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.cache = cache
        rows = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch) if isinstance(getattr(batch, f.name), torch.Tensor)}
        inputs = {**{f"rows.{k}": v for k, v in rows.items()}, "values.delta": values.delta,
                  "values.row_h": values.row_h, **{f"state.{k}": v for k, v in (state or {}).items()}}
        self.base = cache.key({"editor": editor, "hparams": dict(hparams), "layer": values.layer}, inputs)
        self.resumed: list[str] = []  # the steps read back instead of computed

    def _key(self, step: str) -> str:
        return self.cache.key({"update": self.base, "step": step}, {})

    def load(self, step: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
        found = self.cache.load(self._key(step), fields)
        if found is not None:
            self.resumed.append(step)
        return found

    def save(self, step: str, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None) -> None:
        self.cache.save(self._key(step), tensors, meta)
