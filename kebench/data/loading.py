"""Reading a suite's data (its files) into cases: the one loader, and the seeded sample a run draws.

- `SuiteData`: the files behind a file-based suite: its shipped files (or the full public release,
  fetched), the record layouts it accepts, how its files combine, the cases it leaves out.
  `SuiteData.load` reads them, or a user's file, into `LoadedData`: the cases and what results
  record about where they came from. The runner, editors' training pools and benchmarks all load
  through it (by way of `kebench.suites`, which holds one registry entry per suite).
- `TrainingPool`: shipped records apart from a suite's cases, for editors that train on data (MeG).
- `sample_cases` / `check_scale`: a run's seeded sample and the one-line error for a bad --scale.

kebench.data imports nothing above it: this module knows no registry. A file in a layout the suite
does not take raises `LayoutMismatch`, and `kebench.suites` names the suites that take it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kebench.data.case import EditCase
from kebench.data.formats import detect_format, parse_records
from kebench.data.remote import RemoteFile, fetch
from kebench.data.shipped import display_name, file_sha256, read_records, shipped_path
from kebench.data.zsre import ZSRE_TEMPLATE
from kebench.errors import DataError

log = logging.getLogger(__name__)


class LayoutMismatch(DataError):
    """A file in a record layout the suite does not take; `layout` names the layout it is in."""

    def __init__(self, message: str, layout: str) -> None:
        super().__init__(message)
        self.layout = layout


@dataclass
class LoadedData:
    """Cases plus what results must record about where they came from.

    `excluded`: case id -> why it was left out, for suites with a `conflicts` rule (None otherwise).
    """

    cases: list[EditCase]
    files: list[dict[str, Any]]  # [{"path", "sha256", "format"}]
    notes: list[str] = field(default_factory=list)
    excluded: dict[str, list[str]] | None = None
    excluded_reason: str = ""

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"files": self.files, "n_cases_available": len(self.cases), "notes": self.notes}
        if self.excluded is not None:
            out["excluded_cases"] = {
                "reason": self.excluded_reason, "n": len(self.excluded),
                "case_ids": sorted(self.excluded), "conflicts": self.excluded,
            }
        return out


@dataclass(frozen=True)
class SuiteData:
    """A suite's files: which, in which layouts, how they combine, which cases are left out.

    - `files`: shipped file names read (in order) when no path is given.
    - `formats`: layouts accepted; a file in another layout is refused (`LayoutMismatch`).
    - `combine`: applied to the concatenated cases (e.g. zsRE's de-duplication by question).
    - `drop_empty_targets`: skip records whose new target is empty, only for the shipped files
      (user files with empty targets are an error).
    - `remote`: the full public files; fetched into the data cache and read instead of `files`,
      which remain the fallback when they cannot be fetched (see kebench.data.remote).
    - `conflicts`: cases that cannot hold together with others, by case id (MQuAKE's contradictory
      rewrites); left out at load time, so out of every sample, batch and step, and recorded in the
      provenance with `conflict_reason`.
    """

    files: tuple[str, ...]
    formats: tuple[str, ...]
    combine: Callable[[list[EditCase]], list[EditCase]] | None = None
    drop_empty_targets: bool = False
    remote: tuple[RemoteFile, ...] = ()
    conflicts: Callable[[Sequence[EditCase]], dict[str, list[str]]] | None = None
    conflict_reason: str = ""

    def source_paths(self, suite: str, path: Path | None = None) -> tuple[list[Path], list[str]]:
        """The files a load reads, and notices (a fallback from the full public files) for provenance."""
        if path is not None:
            return [Path(path)], []
        shipped = [shipped_path(n) for n in self.files]
        if not self.remote:
            return shipped, []
        fetched, problems = [], []
        for remote in self.remote:
            got, why = fetch(remote)
            fetched.append(got)
            if got is None:
                problems.append(f"{remote.url} ({why})")
        if not problems:
            return [p for p in fetched if p is not None], []
        note = (f"suite {suite!r}: could not fetch the full public files ({'; '.join(problems)}); "
                f"using the shipped files {', '.join(self.files)} instead")
        log.warning(note)
        return shipped, [note]

    def load(self, suite: str, path: str | Path | None = None, fmt: str | None = None,
             template: str = ZSRE_TEMPLATE) -> LoadedData:
        """The cases of suite `suite` from `path` (None: its own files), in file order, and where they came from.

        fmt: the record layout (see kebench.data.formats.FORMATS); None detects it from each file's first record.
        template: wraps questions (zsRE); must contain "{}" once.
        """
        paths, notes = self.source_paths(suite, Path(path) if path else None)
        shipped = not path
        cases: list[EditCase] = []
        for p in paths:
            records = read_records(p)
            source = display_name(p)
            layout = fmt or detect_format(records, source)
            if layout not in self.formats:
                raise LayoutMismatch(
                    f"{source} is in {layout} format, which suite {suite!r} does not take "
                    f"(it takes {', '.join(self.formats)})", layout,
                )
            parsed = parse_records(
                records, layout, suite=suite, source=source, template=template,
                drop_empty_targets=self.drop_empty_targets and shipped,
            )
            if len(parsed) < len(records):
                log.info("%s: dropped %d records with an empty new target", source, len(records) - len(parsed))
            cases.extend(parsed)
        if self.combine is not None:
            cases = self.combine(cases)
        _check_unique_ids(cases, suite)
        files = [{"path": display_name(p), "sha256": file_sha256(p), "format": fmt or "detected"} for p in paths]
        if self.conflicts is None:
            return LoadedData(cases, files, notes)
        excluded = self.conflicts(cases)
        if excluded:
            cases = [c for c in cases if c.case_id not in excluded]
            notes.append(f"{suite}: left out {len(excluded)} cases that conflict with another case "
                         f"({self.conflict_reason}): {', '.join(sorted(excluded))}")
        return LoadedData(cases, files, notes, excluded, self.conflict_reason)


def _check_unique_ids(cases: Sequence[EditCase], suite: str) -> None:
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise DataError(f"suite {suite!r} has case_id {case.case_id!r} twice; case ids must be unique")
        seen.add(case.case_id)


@dataclass(frozen=True)
class TrainingPool:
    """Shipped records apart from a suite's cases, for editors that train on data (MeG's encoder and gate).

    - `name`: the suite whose pool it is; `--hparam pool=<name>` picks it, and results record the name.
    - `file`: the shipped file of its records.
    """

    name: str
    file: str

    def cases(self, exclude: Iterable[EditCase] = (), template: str = ZSRE_TEMPLATE) -> list[EditCase]:
        """The pool's records as cases, less any that shares a case id or an edit prompt (filled in) with
        an `exclude`d case (the ROME subset shares 165 case ids with the CounterFact pool)."""
        excluded = list(exclude)
        ids = {c.case_id for c in excluded}
        texts = {r.text for c in excluded for r in c.requests}
        pool = parse_records(
            read_records(shipped_path(self.file)), suite=f"{self.name}-pool", source=self.file, template=template,
            drop_empty_targets=True,
        )
        return [c for c in pool if c.case_id not in ids and not any(r.text in texts for r in c.requests)]


def check_scale(cases: Sequence[EditCase], n: int) -> None:
    """A one-line error unless 1 <= `n` <= the number of `cases`."""
    suite = cases[0].suite if cases else "the suite"
    if n < 1:
        raise DataError(f"scale {n} must be at least 1; use --scale >= 1")
    if n > len(cases):
        raise DataError(f"scale {n} exceeds the {len(cases)} cases in {suite}; use --scale <= {len(cases)}")


def sample_cases(cases: Sequence[EditCase], n: int, seed: int) -> list[EditCase]:
    """`n` cases drawn with random.Random(seed), kept in their original order (deterministic)."""
    check_scale(cases, n)
    picked = sorted(random.Random(seed).sample(range(len(cases)), n))
    return [cases[i] for i in picked]
