"""The data behind file-based suites: which files, which layouts, how files combine, sampling.

A `DatasetSpec` names a suite's default shipped files, the layouts it accepts and how files
combine (zsRE de-duplicates questions). It is the `data` of a `kebench.suites.Suite`, the one
registry of suites; `load_cases` and `training_pool` look a suite up there by name.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kebench.data.case import EditCase
from kebench.data.formats import detect_format, parse_records
from kebench.data.remote import RemoteFile, fetch
from kebench.data.shipped import display_name, read_records, shipped_path
from kebench.data.zsre import ZSRE_TEMPLATE, question_key
from kebench.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def dedup_by_question(cases: list[EditCase]) -> list[EditCase]:
    """Keep the first case of each zsRE question (files listed first win)."""
    seen: set[str] = set()
    out = []
    for case in cases:
        key = question_key(case)
        if key not in seen:
            seen.add(key)
            out.append(case)
    return out


@dataclass(frozen=True)
class DatasetSpec:
    """A suite: default shipped files, accepted layouts, and how its files combine.

    - `files`: shipped file names read (in order) when no path is given.
    - `formats`: layouts accepted; a file in another layout is refused, naming the right suite.
    - `combine`: applied to the concatenated cases (e.g. de-duplication).
    - `drop_empty_targets`: skip records whose new target is empty, only for the shipped files
      (user files with empty targets are an error).
    - `pool`: shipped file of records disjoint from the suite, for editors that train on data (MeG).
    - `remote`: the full public files; fetched into the data cache and read instead of `files`,
      which remain the fallback when they cannot be fetched (see kebench.data.remote).
    """

    name: str
    files: tuple[str, ...]
    formats: tuple[str, ...]
    description: str = ""
    combine: Callable[[list[EditCase]], list[EditCase]] | None = None
    drop_empty_targets: bool = False
    pool: str | None = None
    remote: tuple[RemoteFile, ...] = ()

    def source_paths(self, path: Path | None = None) -> tuple[list[Path], list[str]]:
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
        note = (f"suite {self.name!r}: could not fetch the full public files ({'; '.join(problems)}); "
                f"using the shipped files {', '.join(self.files)} instead")
        log.warning(note)
        return shipped, [note]

    def load(self, path: Path | None = None, fmt: str | None = None, template: str = ZSRE_TEMPLATE) -> list[EditCase]:
        return self.load_paths(self.source_paths(path)[0], fmt, template, shipped=path is None)

    def load_paths(self, paths: Sequence[Path], fmt: str | None, template: str, shipped: bool) -> list[EditCase]:
        """Cases from `paths` (`shipped`: the suite's own files, where empty targets are dropped)."""
        cases: list[EditCase] = []
        for p in paths:
            records = read_records(p)
            source = display_name(p)
            layout = fmt or detect_format(records, source)
            if layout not in self.formats:
                owners = _suites_taking(layout)
                raise DataError(
                    f"{source} is in {layout} format, which suite {self.name!r} does not take "
                    f"(it takes {', '.join(self.formats)}); use suite {' or '.join(map(repr, owners)) or 'a matching suite'}"
                )
            parsed = parse_records(
                records, layout, suite=self.name, source=source, template=template,
                drop_empty_targets=self.drop_empty_targets and shipped,
            )
            if len(parsed) < len(records):
                log.info("%s: dropped %d records with an empty new target", source, len(records) - len(parsed))
            cases.extend(parsed)
        if self.combine is not None:
            cases = self.combine(cases)
        _check_unique_ids(cases, self.name)
        return cases


def _check_unique_ids(cases: Sequence[EditCase], suite: str) -> None:
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise DataError(f"suite {suite!r} has case_id {case.case_id!r} twice; case ids must be unique")
        seen.add(case.case_id)


def _suites_taking(layout: str) -> list[str]:
    from kebench.suites import all_suites

    return [s.name for s in all_suites() if s.data is not None and layout in s.data.formats]


def data_spec(suite: str) -> DatasetSpec:
    """The files behind the registered suite `suite` (an error for suites that are not files)."""
    from kebench.suites import get_suite

    spec = get_suite(suite).data
    if spec is None:
        raise ConfigError(f"suite {suite!r} is not backed by data files; load it through kebench.suites.get_suite")
    return spec


_CF = ("counterfact-easyedit", "counterfact-rome")
_ZSRE = ("zsre-mend", "knowedit")
COUNTERFACT = DatasetSpec(
    "counterfact", ("counterfact-edit.json",), _CF,
    "CounterFact, 10,000 cases (EasyEdit layout: 1 paraphrase, 1 neighbourhood prompt each)",
    pool="counterfact-train.json",
)
COUNTERFACT_ROME = DatasetSpec(
    "counterfact-rome", ("counterfact_rome_subset349.json",), _CF,
    "CounterFact, 336 cases (ROME layout: 2 paraphrases, 10 neighbourhood and 10 generation prompts each)",
    pool="counterfact-train.json",
)
ZSRE = DatasetSpec(
    "zsre", ("zsre_mend_eval_portability_gpt4.json", "zsre_mend_train_1k.json"), _ZSRE,
    "zsRE (MEND split): 1,037 eval cases with portability + 998 train cases, de-duplicated by question",
    combine=dedup_by_question, drop_empty_targets=True, pool="zsre_mend_train_1k.json",
)
ZSRE_KNOWEDIT = DatasetSpec(
    "zsre-knowedit", ("knowedit_ZsRE-test-all.json",), _ZSRE,
    "zsRE (KnowEdit test set), 1,304 cases with relation-specificity locality and portability",
    pool="zsre_mend_train_1k.json",
)
ZSRE_ALL = DatasetSpec(
    "zsre-all", ("zsre_mend_eval_portability_gpt4.json", "zsre_mend_train_1k.json", "knowedit_ZsRE-test-all.json"),
    _ZSRE,
    "zsRE, every shipped question: the MEND eval and train files and the KnowEdit test set, de-duplicated "
    "by question (2,548 cases; a KnowEdit case's locality prompts are its own, not NQ questions)",
    combine=dedup_by_question, drop_empty_targets=True, pool="zsre_mend_train_1k.json",
)
MQUAKE = DatasetSpec(
    "mquake", ("MQuAKE-hard.json",), ("mquake",),
    "MQuAKE-hard, 329 cases of 4 edits each with 3 multi-hop questions",
)

# The complete public releases (fetched once; the shipped files above are the fallback).
ROME_DATA = "https://rome.baulab.info/data/dsets"
COUNTERFACT_FULL = DatasetSpec(
    "counterfact-full", ("counterfact-edit.json",), _CF,
    "CounterFact, all 21,919 cases (ROME release, fetched; falls back to the shipped 10,000)",
    pool="counterfact-train.json", remote=(RemoteFile("counterfact.json", f"{ROME_DATA}/counterfact.json"),),
)
ZSRE_FULL = DatasetSpec(
    "zsre-full", ("zsre_mend_eval_portability_gpt4.json", "zsre_mend_train_1k.json"), _ZSRE,
    "zsRE MEND eval split, 19,086 cases (ROME release, fetched; falls back to the shipped files)",
    combine=dedup_by_question, drop_empty_targets=True, pool="zsre_mend_train_1k.json",
    remote=(RemoteFile("zsre_mem-eval.json", f"{ROME_DATA}/zsre_mem-eval.json"),),
)
MQUAKE_CF3K = DatasetSpec(
    "mquake-cf3k", ("MQuAKE-hard.json",), ("mquake",),
    "MQuAKE-CF-3k, 3,000 multi-hop cases (fetched from GitHub; falls back to the shipped MQuAKE-hard)",
    remote=(RemoteFile("MQuAKE-CF-3k.json",
                       "https://raw.githubusercontent.com/princeton-nlp/MQuAKE/main/datasets/MQuAKE-CF-3k.json"),),
)


def load_cases(
    suite: str, path: Path | None = None, fmt: str | None = None, template: str = ZSRE_TEMPLATE
) -> list[EditCase]:
    """All cases of `suite`, from `path` or (None) the suite's shipped files, in file order.

    fmt: the record layout (see FORMATS); None detects it from the first record.
    template: wraps questions (zsRE, MQuAKE); must contain "{}" once.
    """
    return data_spec(suite).load(path, fmt, template)


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


def training_pool(suite: str, exclude: Iterable[EditCase] = (), template: str = ZSRE_TEMPLATE) -> list[EditCase]:
    """Cases for editors that train on data (MeG's encoder), disjoint from the `exclude`d cases.

    A pool case is dropped when it shares a case_id or an edit prompt (filled in)
    with any excluded case; the ROME subset shares 165 case_ids with the pool.
    """
    spec = data_spec(suite)
    if spec.pool is None:
        raise DataError(f"suite {suite!r} has no training pool; train on another suite's pool or skip this editor")
    excluded = list(exclude)
    ids = {c.case_id for c in excluded}
    texts = {r.text for c in excluded for r in c.requests}
    pool = parse_records(
        read_records(shipped_path(spec.pool)), suite=f"{suite}-pool", source=spec.pool, template=template,
        drop_empty_targets=True,
    )
    return [c for c in pool if c.case_id not in ids and not any(r.text in texts for r in c.requests)]
