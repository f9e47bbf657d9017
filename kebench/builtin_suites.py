"""The built-in suites: each data set of kebench.data.suites paired with its metrics, registered in SUITES."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kebench.data import suites as data
from kebench.data.mquake import drop_conflicting
from kebench.errors import DataError
from kebench.metrics.aggregate import aggregate, counterfact_score, harmonic_mean, zsre_score
from kebench.metrics.counterfact import counterfact_evaluate, neighbourhood_kept
from kebench.metrics.mquake import mquake_evaluate
from kebench.metrics.zsre import zsre_evaluate, zsre_reference
from kebench.suites import SUITES, LoadedData, Suite


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
ZSRE_TF = ("reliability_tf", "generality_tf", "locality_tf")
# generation: is the answer stated (span in the answer line), and does an unrelated answer stay the same
ZSRE_CONTAINS = ("reliability_contains", "generality_contains", "locality_em")
ZSRE_HEADLINE = (*ZSRE_TF, *ZSRE_CONTAINS[:2], "reliability_em", "generality_em", "locality_em", "score")
MQUAKE_HEADLINE = ("edit_accuracy", "multihop_accuracy")

for _spec in (data.COUNTERFACT, data.COUNTERFACT_ROME, data.COUNTERFACT_FULL):
    # fluency (ROME's n-gram entropy of greedy generations) where the file has generation prompts
    headline = CF_HEADLINE if _spec is data.COUNTERFACT else (*CF_HEADLINE, "ngram_entropy")
    SUITES.register(_spec.name, Suite(_spec.name, _spec.description, _no_reference_eval(counterfact_evaluate),
                                      _counterfact_aggregate, headline, data=_spec, paired=neighbourhood_kept))
for _spec in (data.ZSRE, data.ZSRE_KNOWEDIT, data.ZSRE_ALL, data.ZSRE_FULL):
    SUITES.register(_spec.name, Suite(_spec.name, _spec.description, _zsre_eval, _zsre_aggregate, ZSRE_HEADLINE,
                                      data=_spec, reference=zsre_reference))


@dataclass
class _MquakeData(LoadedData):
    """Loaded MQuAKE cases less the contradictory ones, which the results' provenance lists."""

    excluded: dict[str, list[str]] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "excluded_cases": {
            "reason": "a rewrite sets the same subject and relation as another case's to a different object",
            "n": len(self.excluded), "case_ids": sorted(self.excluded), "conflicts": self.excluded,
        }}


@dataclass(frozen=True)
class _MquakeSuite(Suite):
    """MQuAKE with contradictory cases left out at load time (so out of every sample, batch and step).

    After editing, a batch (or a sequence of steps) that asks to rewrite one (subject, relation) to two
    different objects cannot satisfy both cases, so both are skipped rather than one chosen
    (`kebench.data.mquake.drop_conflicting`); MQuAKE-hard loses four (7699, 8236, 8563, 8695).
    """

    def load(self, data_file: str | None = None, fmt: str | None = None) -> LoadedData:
        loaded = super().load(data_file, fmt)
        kept, excluded = drop_conflicting(loaded.cases)
        notes = list(loaded.notes)
        if excluded:
            notes.append(f"{self.name}: left out {len(excluded)} cases whose rewrites contradict another case's "
                         f"(same subject and relation, different new object): {', '.join(sorted(excluded))}")
        return _MquakeData(kept, loaded.files, notes, excluded)


for _spec in (data.MQUAKE, data.MQUAKE_CF3K):
    SUITES.register(_spec.name, _MquakeSuite(_spec.name, _spec.description, _no_reference_eval(mquake_evaluate),
                                             aggregate, MQUAKE_HEADLINE, data=_spec))
