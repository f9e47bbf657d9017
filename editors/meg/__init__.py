"""MeG: Massive Editing via dynamic weight Generation (registered as editor "meg")."""

from editors.meg.config import MeGHParams
from editors.meg.editor import MeGEditor
from editors.meg.handle import MeGHandle

__all__ = ["MeGEditor", "MeGHParams", "MeGHandle"]
