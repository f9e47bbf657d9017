"""MEMIT, and the locate-then-edit core AlphaEdit reuses (keys, target values, layer spreading)."""

from editors.memit.editor import LocateThenEditEditor, MEMITEditor
from editors.memit.hparams import LocateEditHParams, MemitHParams

__all__ = ["LocateEditHParams", "LocateThenEditEditor", "MEMITEditor", "MemitHParams"]
