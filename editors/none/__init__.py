"""The `none` editor: changes nothing; its results are the unedited model's numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kebench.data.case import EditRequest
from kebench.editor import EditHandle, Editor, HParams, WeightEditHandle, register_editor
from kebench.models.loaded import LoadedModel


@dataclass(frozen=True)
class NoneHParams(HParams):
    """No hyperparameters."""


@register_editor
class NoneEditor(Editor):
    name = "none"
    hparams_cls = NoneHParams
    changes_nothing = True

    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> EditHandle:
        return WeightEditHandle(lm.model, [], {"n_requests": len(requests)})
