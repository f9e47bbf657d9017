"""The suites: one registry entry per suite, holding its data, its training pool and its metrics.

"Suite" is the code's word for what the command line and results files call a dataset
(`kebench run --dataset`, `run.dataset`); a suite's files are its data (`SuiteData`).

A `Suite` is the one entry of its name in `SUITES`: the files and record layouts it reads, the
training pool editors that train on data use with it (MeG), how it evaluates a model, and the
metrics tables and gates show. `Suite.load` is the one loader: the runner, MeG's training pool and
the benchmarks all read cases through it (`load_cases` by name). The runner only talks to `Suite`;
new suites register here (or through the `kebench.suites` entry-point group) without touching it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kebench.data.case import EditCase
from kebench.data.loading import LayoutMismatch, LoadedData, SuiteData, TrainingPool, sample_cases
from kebench.data.mquake import conflicting_cases
from kebench.data.remote import RemoteFile
from kebench.data.zsre import dedup_by_question
from kebench.errors import ConfigError, DataError
from kebench.metrics.aggregate import aggregate, counterfact_score, harmonic_mean, zsre_score
from kebench.metrics.counterfact import counterfact_evaluate, neighbourhood_kept
from kebench.metrics.mquake import mquake_evaluate
from kebench.metrics.zsre import zsre_evaluate, zsre_reference
from kebench.models.loaded import LoadedModel
from kebench.registry import Registry

__all__ = [
    "SUITES", "LoadedData", "Suite", "SuiteData", "TrainingPool",
    "all_suites", "get_suite", "load_cases", "post_metrics", "suite_names", "training_pool",
]


@dataclass(frozen=True)
class Suite:
    """How to load, score and summarise one benchmark: the one registry entry per suite name.

    - `data`: the files behind a file-based suite (`SuiteData`: shipped defaults, accepted layouts,
      how they combine); `load` reads them. A suite that is not files gives `loader` instead.
    - `pool`: the training pool that editors which train on data use with this suite (MeG's encoder
      and gate; see `Editor.default_hparams`); None: it has none. Several suites share one pool.
    - `load(data_file, fmt) -> LoadedData` (None = the suite's own files)
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
    data: SuiteData | None = None
    loader: Callable[[str | None, str | None], LoadedData] | None = None
    reference: Callable[..., list[dict[str, Any]]] | None = None
    # metrics that compare each case's post-edit record with its pre-edit one (locality vs the unedited model)
    paired: Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, float]] | None = None
    pool: TrainingPool | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.loader is None):
            raise ConfigError(f"suite {self.name!r} needs exactly one of data (its files) or loader")

    def load(self, data_file: str | Path | None = None, fmt: str | None = None) -> LoadedData:
        """The cases of `data_file` (None: the suite's own files) and where they came from."""
        if self.loader is not None:
            return self.loader(str(data_file) if data_file else None, fmt)
        try:
            return self.data.load(self.name, data_file, fmt)
        except LayoutMismatch as e:
            owners = [s.name for s in all_suites() if s.data is not None and e.layout in s.data.formats]
            raise DataError(f"{e}; use suite {' or '.join(map(repr, owners)) or 'a matching suite'}") from None

    def sample(self, cases: list[EditCase], n: int | None, seed: int) -> list[EditCase]:
        return list(cases) if n is None else sample_cases(cases, n, seed)

    def references(self, lm: LoadedModel, cases: Sequence[EditCase], batch_size: int = 32) -> list[dict[str, Any]]:
        if self.reference is None:
            return [{"case_id": c.case_id} for c in cases]
        return self.reference(lm, cases, batch_size=batch_size)


SUITES: Registry[Suite] = Registry("dataset", entry_point_group="kebench.suites")  # "dataset": the CLI's word


def suite_names() -> list[str]:
    return SUITES.names()


def all_suites() -> list[Suite]:
    return [get_suite(n) for n in suite_names()]


def get_suite(name: str) -> Suite:
    return SUITES.get(name)


def load_cases(suite: str, data_file: str | Path | None = None, fmt: str | None = None) -> list[EditCase]:
    """The cases of the suite named `suite`, from `data_file` (None: its own files), exactly as a run loads them."""
    return get_suite(suite).load(data_file, fmt).cases


def training_pool(suite: str, exclude: Iterable[EditCase] = ()) -> list[EditCase]:
    """The training pool of the suite named `suite` (`Suite.pool`), less every record that shares a
    case id or an edit prompt with an `exclude`d case."""
    pool = get_suite(suite).pool
    if pool is None:
        raise DataError(f"suite {suite!r} has no training pool; train on another suite's pool or skip this editor")
    return pool.cases(exclude)


def post_metrics(suite: Suite, pre: list[dict[str, Any]], post: list[dict[str, Any]]) -> dict[str, float]:
    """The post-edit summary: `aggregate` of the post records plus the suite's `paired` metrics."""
    out = suite.aggregate(post)
    if suite.paired is not None:
        out.update(suite.paired(pre, post))
    return out


# ---------------------------------------------------------------------------------------------
# The built-in suites.

def _counterfact_aggregate(records: list[dict[str, Any]]) -> dict[str, float]:
    summary = aggregate(records)
    summary["score"] = counterfact_score(summary)
    return summary


def _zsre_aggregate(records: list[dict[str, Any]]) -> dict[str, float]:
    """Means, the Scores, and `chat_template` (1.0 where generation used the chat template).

    `score` pairs the teacher-forced three with the generation three that ask whether the answer
    is stated: reliability/generality `_contains` and locality `_em` (README, Metrics).
    """
    summary = aggregate(records)
    formats = {r.get("prompt_format") for r in records}
    if len(formats) > 1:
        raise DataError(f"ZsRE records mix prompt formats {sorted(map(str, formats))}: evaluate every case the same way")
    (fmt,) = formats
    if fmt is not None:
        summary["chat_template"] = float(fmt == "chat-template")
    summary["score_tf"] = zsre_score(summary, "tf")
    summary["score_em"] = zsre_score(summary, "em")
    if "reliability_contains" in summary:  # records from before the span metric have no contains Score
        contains = [summary[k] for k in ZSRE_CONTAINS]
        summary["score_contains"] = harmonic_mean(contains)
        summary["score"] = harmonic_mean([summary[k] for k in ZSRE_TF] + contains)
    else:
        summary["score"] = zsre_score(summary, "both")
    return summary


def _no_reference_eval(fn: Callable[..., list[dict[str, Any]]]) -> Callable[..., list[dict[str, Any]]]:
    """Adapt a metric that needs no pre-edit reference to the Suite.evaluate signature."""

    def evaluate(lm, cases, references, condition, *, batch_size: int = 32):
        return fn(lm, cases, condition, batch_size=batch_size)

    return evaluate


def _zsre_eval(lm, cases, references, condition, *, batch_size: int = 32):
    return zsre_evaluate(lm, cases, references, condition, batch_size=batch_size)


CF_HEADLINE = ("efficacy_success", "paraphrase_success", "neighbourhood_success", "score", "neighbourhood_kept")
# fluency (ROME's n-gram entropy of greedy generations) where the file has generation prompts
CF_FLUENCY_HEADLINE = (*CF_HEADLINE, "ngram_entropy")
ZSRE_TF = ("reliability_tf", "generality_tf", "locality_tf")
# generation: is the answer stated (span in the answer line), and does an unrelated answer stay the same
ZSRE_CONTAINS = ("reliability_contains", "generality_contains", "locality_em")
ZSRE_HEADLINE = (*ZSRE_TF, *ZSRE_CONTAINS[:2], "reliability_em", "generality_em", "locality_em", "score")
MQUAKE_HEADLINE = ("edit_accuracy", "multihop_accuracy")

_CF = ("counterfact-easyedit", "counterfact-rome")
_ZSRE = ("zsre-mend", "knowedit")
_ZSRE_MEND = ("zsre_mend_eval_portability_gpt4.json", "zsre_mend_train_1k.json")
ROME_DATA = "https://rome.baulab.info/data/dsets"

# Training pools: shipped records none of their suite's cases are drawn from (CounterFact's train split; MEND's
# zsRE train file, which the `zsre` suite also holds, so MeG on all of `zsre` needs another pool).
COUNTERFACT_POOL = TrainingPool("counterfact", "counterfact-train.json")
ZSRE_POOL = TrainingPool("zsre", "zsre_mend_train_1k.json")


def _counterfact(name: str, description: str, data: SuiteData, headline: tuple[str, ...] = CF_HEADLINE) -> Suite:
    return Suite(name, description, _no_reference_eval(counterfact_evaluate), _counterfact_aggregate, headline,
                 data=data, paired=neighbourhood_kept, pool=COUNTERFACT_POOL)


def _zsre(name: str, description: str, data: SuiteData, pool: TrainingPool = ZSRE_POOL) -> Suite:
    return Suite(name, description, _zsre_eval, _zsre_aggregate, ZSRE_HEADLINE, data=data, reference=zsre_reference,
                 pool=pool)


def _mquake(name: str, description: str, files: tuple[str, ...], remote: tuple[RemoteFile, ...] = ()) -> Suite:
    """MQuAKE with contradictory cases left out at load time (so out of every sample, batch and step).

    After editing, a batch (or a sequence of steps) that asks to rewrite one (subject, relation) to two
    different objects cannot satisfy both cases, so both are skipped rather than one chosen
    (`kebench.data.mquake.conflicting_cases`); MQuAKE-hard loses four (7699, 8236, 8563, 8695).
    MQuAKE ships no training split: its editors train on CounterFact's pool (Wikidata facts as well).
    """
    data = SuiteData(files, ("mquake",), remote=remote, conflicts=conflicting_cases,
                     conflict_reason="a rewrite sets the same subject and relation as another case's to a different object")
    return Suite(name, description, _no_reference_eval(mquake_evaluate), aggregate, MQUAKE_HEADLINE, data=data,
                 pool=COUNTERFACT_POOL)


for _suite in (
    _counterfact(
        "counterfact", "CounterFact, 10,000 cases (EasyEdit layout: 1 paraphrase, 1 neighbourhood prompt each)",
        SuiteData(("counterfact-edit.json",), _CF),
    ),
    _counterfact(
        "counterfact-rome",
        "CounterFact, 336 cases (ROME layout: 2 paraphrases, 10 neighbourhood and 10 generation prompts each)",
        SuiteData(("counterfact_rome_subset349.json",), _CF), CF_FLUENCY_HEADLINE,
    ),
    _counterfact(
        "counterfact-full", "CounterFact, all 21,919 cases (ROME release, fetched; falls back to the shipped 10,000)",
        SuiteData(("counterfact-edit.json",), _CF,
                  remote=(RemoteFile("counterfact.json", f"{ROME_DATA}/counterfact.json"),)),
        CF_FLUENCY_HEADLINE,
    ),
    _zsre(
        "zsre", "zsRE (MEND split): 1,037 eval cases with portability + 998 train cases, de-duplicated by question",
        SuiteData(_ZSRE_MEND, _ZSRE, combine=dedup_by_question, drop_empty_targets=True),
    ),
    _zsre(
        "zsre-knowedit", "zsRE (KnowEdit test set), 1,304 cases with relation-specificity locality and portability",
        SuiteData(("knowedit_ZsRE-test-all.json",), _ZSRE),
    ),
    _zsre(
        "zsre-all",
        "zsRE, every shipped question: the MEND eval and train files and the KnowEdit test set, de-duplicated "
        "by question (2,548 cases; a KnowEdit case's locality prompts are its own, not NQ questions)",
        SuiteData((*_ZSRE_MEND, "knowedit_ZsRE-test-all.json"), _ZSRE, combine=dedup_by_question,
                  drop_empty_targets=True),
        pool=COUNTERFACT_POOL,  # the zsRE pool is part of this suite: all of it would leave MeG an empty pool
    ),
    _zsre(
        "zsre-full", "zsRE MEND eval split, 19,086 cases (ROME release, fetched; falls back to the shipped files)",
        SuiteData(_ZSRE_MEND, _ZSRE, combine=dedup_by_question, drop_empty_targets=True,
                  remote=(RemoteFile("zsre_mem-eval.json", f"{ROME_DATA}/zsre_mem-eval.json"),)),
    ),
    _mquake("mquake", "MQuAKE-hard, 329 cases of 4 edits each with 3 multi-hop questions", ("MQuAKE-hard.json",)),
    _mquake(
        "mquake-cf3k",
        "MQuAKE-CF-3k, 3,000 multi-hop cases (fetched from GitHub; falls back to the shipped MQuAKE-hard)",
        ("MQuAKE-hard.json",),
        (RemoteFile("MQuAKE-CF-3k.json",
                    "https://raw.githubusercontent.com/princeton-nlp/MQuAKE/main/datasets/MQuAKE-CF-3k.json"),),
    ),
):
    SUITES.register(_suite.name, _suite)
