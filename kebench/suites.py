"""A suite = its data + its evaluation + its headline metrics, under one name (one registry).

The runner only talks to `Suite`; new suites register here (or through the
`kebench.suites` entry-point group) without touching the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kebench.data.case import EditCase
from kebench.data.suites import DatasetSpec
from kebench.errors import ConfigError
from kebench.models.loaded import LoadedModel
from kebench.registry import Registry

Condition = Callable[[Sequence[str]], Any] | None


@dataclass
class LoadedData:
    """Cases plus what results must record about where they came from."""

    cases: list[EditCase]
    files: list[dict[str, Any]]  # [{"path", "sha256", "format", "records"}]
    notes: list[str] = field(default_factory=list)

    def provenance(self) -> dict[str, Any]:
        return {"files": self.files, "n_cases_available": len(self.cases), "notes": self.notes}


@dataclass(frozen=True)
class Suite:
    """How to load, score and summarise one benchmark: the one registry entry per suite name.

    - `data`: the files behind a file-based suite (shipped defaults, accepted layouts, how they
      combine, the training pool); `load` reads them. A suite that is not files gives `loader`.
    - `load(data_file, fmt) -> LoadedData` (None = the suite's default files)
    - `reference(lm, cases, batch_size=) -> list[dict]`: pre-edit predictions that later
      metrics compare against (locality); one record per case with "case_id".
    - `evaluate(lm, cases, references, condition, batch_size=) -> list[dict]`: one record per case.
    - `aggregate(records) -> dict[str, float]`; `headline`: the metrics tables and gates show.
    - `paired(pre_records, post_records) -> dict[str, float]`: post-edit metrics that need both.
    """

    name: str
    description: str
    evaluate: Callable[..., list[dict[str, Any]]]
    aggregate: Callable[[list[dict[str, Any]]], dict[str, float]]
    headline: tuple[str, ...]
    data: DatasetSpec | None = None
    loader: Callable[[str | None, str | None], LoadedData] | None = None
    reference: Callable[..., list[dict[str, Any]]] | None = None
    # metrics that compare each case's post-edit record with its pre-edit one (locality vs the unedited model)
    paired: Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, float]] | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.loader is None):
            raise ConfigError(f"suite {self.name!r} needs exactly one of data (its files) or loader")

    def load(self, data_file: str | None = None, fmt: str | None = None) -> LoadedData:
        """The cases of `data_file` (None: the suite's own files) and where they came from."""
        if self.loader is not None:
            return self.loader(data_file, fmt)
        from kebench.data.shipped import display_name, file_sha256
        from kebench.data.zsre import ZSRE_TEMPLATE

        paths, notes = self.data.source_paths(Path(data_file) if data_file else None)
        cases = self.data.load_paths(paths, fmt, ZSRE_TEMPLATE, shipped=data_file is None)
        files = [{"path": display_name(p), "sha256": file_sha256(p), "format": fmt or "detected"} for p in paths]
        return LoadedData(cases, files, notes)

    def sample(self, cases: list[EditCase], n: int | None, seed: int) -> list[EditCase]:
        from kebench.data.suites import sample_cases

        return list(cases) if n is None else sample_cases(cases, n, seed)

    def references(self, lm: LoadedModel, cases: Sequence[EditCase], batch_size: int = 32) -> list[dict[str, Any]]:
        if self.reference is None:
            return [{"case_id": c.case_id} for c in cases]
        return self.reference(lm, cases, batch_size=batch_size)


SUITES: Registry[Suite] = Registry("dataset", entry_point_group="kebench.suites")


def suite_names() -> list[str]:
    _register_builtin()
    return SUITES.names()


def all_suites() -> list[Suite]:
    return [get_suite(n) for n in suite_names()]


def get_suite(name: str) -> Suite:
    _register_builtin()
    return SUITES.get(name)


_builtin_done = False


def _register_builtin() -> None:
    global _builtin_done
    if not _builtin_done:
        _builtin_done = True
        import kebench.builtin_suites  # noqa: F401  (registers counterfact, zsre, mquake, ...)


def post_metrics(suite: Suite, pre: list[dict[str, Any]], post: list[dict[str, Any]]) -> dict[str, float]:
    """The post-edit summary: `aggregate` of the post records plus the suite's `paired` metrics."""
    out = suite.aggregate(post)
    if suite.paired is not None:
        out.update(suite.paired(pre, post))
    return out
