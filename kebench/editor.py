"""The Editor interface every method implements, and the handles that undo an edit.

An editor turns edit requests into a change of the model; the handle it returns is the
only way back (`restore()`), bit-exact. Weight editors snapshot the tensors they touch;
hook editors (MeG) detach their hooks. Runners never branch on the editor's name.
"""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from kebench.config import load_hparams
from kebench.data.case import EditRequest
from kebench.errors import NumericalError
from kebench.models.loaded import LoadedModel
from kebench.registry import Registry

if TYPE_CHECKING:
    from kebench.suites import Suite


@dataclasses.dataclass(frozen=True)
class HParams:
    """Base of every editor's hyperparameter dataclass."""


class EditHandle(ABC):
    """The result of one `Editor.apply`: undo it with `restore()`."""

    #: Editor-reported diagnostics (e.g. fitting convergence, oracle efficacy), saved in results.
    stats: dict[str, Any]
    #: True where this handle serves every earlier step's edits too (a growing sequence: MeG's one gate and
    #: generator); a sequence then keeps this handle alone, and the earlier ones are undone and let go. Hook
    #: editors only: undoing an earlier weight edit would write its saved weights over the new edit.
    covers_previous_steps: bool = False

    @abstractmethod
    def restore(self) -> None:
        """Bring the model back to exactly its state before this edit."""

    def conditioning(self, prompts: Sequence[str]) -> AbstractContextManager[None]:
        """Context in force while the model runs on a batch of `prompts` (query-dependent editors)."""
        return contextlib.nullcontext()

    def edited_state(self) -> dict[str, torch.Tensor]:
        """Tensors that, loaded into the unedited model, reproduce the edit (for checkpoints)."""
        return {}


class WeightEditHandle(EditHandle):
    """Undo for editors that change parameters in place: keeps a copy of the originals."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str], stats: dict[str, Any] | None = None) -> None:
        self.model = model
        params = dict(model.named_parameters())
        self.originals = {n: params[n].detach().clone() for n in names}
        self.stats = stats or {}
        self._restored = False

    def restore(self) -> None:
        if self._restored:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in self.originals.items():
                params[name].copy_(value)
        self._restored = True

    def edited_state(self) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        return {n: params[n].detach().clone() for n in self.originals}


class LoadedStateHandle(WeightEditHandle):
    """A checkpointed edit loaded back into an unedited model."""

    def __init__(self, model: torch.nn.Module, state: dict[str, torch.Tensor], stats: dict[str, Any] | None = None):
        super().__init__(model, list(state), stats)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value.to(params[name].dtype))


class StackedHandle(EditHandle):
    """Sequential editing: several handles applied in order, undone in reverse."""

    def __init__(self, handles: Sequence[EditHandle] = ()) -> None:
        self.handles: list[EditHandle] = list(handles)

    @property
    def stats(self) -> dict[str, Any]:  # type: ignore[override]
        return {"steps": [h.stats for h in self.handles]}

    def push(self, handle: EditHandle) -> None:
        if handle.covers_previous_steps:  # the earlier handles serve nothing the new one does not: free them
            if any(isinstance(h, WeightEditHandle) for h in (handle, *self.handles)):
                raise TypeError("only hook edits can cover previous steps: undoing a weight edit would overwrite "
                                "the weights edited after it")
            for earlier in reversed(self.handles):
                earlier.restore()
            self.handles.clear()
        self.handles.append(handle)

    def restore(self) -> None:
        for handle in reversed(self.handles):
            handle.restore()
        self.handles.clear()

    @contextlib.contextmanager
    def conditioning(self, prompts: Sequence[str]) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for handle in self.handles:
                stack.enter_context(handle.conditioning(prompts))
            yield

    def edited_state(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for handle in self.handles:
            state.update(handle.edited_state())
        return state


class Editor(ABC):
    """A knowledge-editing method.

    Subclasses set `name`, `hparams_cls` and `config_dir` (per-model YAML defaults) and
    implement `apply`. State that must persist across sequential steps (e.g. AlphaEdit's
    accumulated keys) lives on the instance, never in module globals, and is exposed via
    `state_dict()` so sequential runs can checkpoint and resume.
    """

    name: ClassVar[str]
    hparams_cls: ClassVar[type[HParams]]
    config_dir: ClassVar[Path | None] = None
    #: True if the editor leaves the model as it is (the `none` baseline): its post-edit records are the
    #: pre-edit ones, so the runner reuses them instead of evaluating the same model twice.
    changes_nothing: ClassVar[bool] = False

    def __init__(self, hparams: HParams | None = None) -> None:
        self.hparams = hparams if hparams is not None else self.hparams_cls()

    @classmethod
    def default_hparams(cls, model_name: str, suite: Suite | None = None, settings_file: str | None = None) -> HParams:
        """The editor's settings for `model_name`: the file in `config_dir` that serves the model
        (kebench.config.config_file), or `settings_file` (a user's own, --hparams-file) instead.

        `suite`: the suite the run edits, which the runner passes so that a default may follow it; an
        editor that trains on data overrides this to take the suite's training pool (MeG: `Suite.pool`).
        Without a suite (tables comparing recorded settings with today's), the model's defaults alone.
        """
        return load_hparams(cls.hparams_cls, cls.config_dir, model_name, settings_file)

    def prepare(self, lm: LoadedModel) -> None:
        """Load or compute what the editor needs from the UNEDITED model (statistics, prefixes).

        The runner calls this before the first edit, also when a sequential run resumes with
        earlier steps loaded back, so nothing is ever computed from an edited model by mistake.
        """

    def plan(self, requests: Sequence[EditRequest]) -> None:
        """The distinct edits the run will make over all its steps, told before the first step (also on resume),
        for editors that size themselves to the whole sequence or keep its data out of their training (MeG).
        Default: ignored."""

    @abstractmethod
    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> EditHandle:
        """Edit `lm.model` so it states every request's `target_new`; return the undo handle."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"editor {self.name!r} has no state to load")

    def save_edits(self, handle: EditHandle, path: Path) -> None:
        """Write what `load_edits` needs to rebuild `handle` without refitting."""
        from kebench.io import atomic_save_safetensors

        atomic_save_safetensors(path / "edited_state.safetensors", handle.edited_state())

    def load_edits(self, lm: LoadedModel, path: Path) -> EditHandle:
        from safetensors.torch import load_file

        return LoadedStateHandle(lm.model, load_file(str(path / "edited_state.safetensors")))


# Every editor, built-in or not, arrives through the "kebench.editors" entry-point group (pyproject.toml)
# and is imported only when a run asks for it by name.
EDITORS: Registry[type[Editor]] = Registry("editor", entry_point_group="kebench.editors")


def register_editor(cls: type[Editor]) -> type[Editor]:
    """Class decorator: make an Editor available to `kebench run --editor <cls.name>`."""
    EDITORS.register(cls.name, cls)
    return cls


def check_finite(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Fail loudly on NaN/Inf instead of writing garbage into the model."""
    if not torch.isfinite(tensor).all():
        raise NumericalError(f"{name} contains NaN/Inf; try a smaller learning rate or larger covariance weight")
    return tensor
