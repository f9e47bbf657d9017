"""AlphaEdit: MEMIT's keys and target values, with a null-space-projected update."""

from editors.alphaedit.editor import AlphaEditEditor, AlphaEditHandle
from editors.alphaedit.hparams import AlphaEditHParams

__all__ = ["AlphaEditEditor", "AlphaEditHParams", "AlphaEditHandle"]
