"""The built-in suites: each data set of kebench.data.suites paired with its metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kebench.data.shipped import display_name, file_sha256
from kebench.data.zsre import ZSRE_TEMPLATE
from kebench.data.suites import DATASETS
from kebench.metrics.aggregate import aggregate, counterfact_score, zsre_score
from kebench.metrics.counterfact import counterfact_evaluate
from kebench.metrics.mquake import mquake_evaluate
from kebench.metrics.zsre import zsre_evaluate, zsre_reference
from kebench.suites import SUITES, LoadedData, Suite


def _loader(name: str) -> Callable[[str | None, str | None], LoadedData]:
    def load(data_file: str | None, fmt: str | None) -> LoadedData:
        spec = DATASETS.get(name)
        paths, notes = spec.source_paths(Path(data_file) if data_file else None)
        cases = spec.load_paths(paths, fmt, ZSRE_TEMPLATE, shipped=data_file is None)
        files = [{"path": display_name(p), "sha256": file_sha256(p), "format": fmt or "detected"} for p in paths]
        return LoadedData(cases, files, notes)

    return load


def _counterfact_aggregate(records: list[dict[str, Any]]) -> dict[str, float]:
    summary = aggregate(records)
    summary["score"] = counterfact_score(summary)
    return summary


def _zsre_aggregate(records: list[dict[str, Any]]) -> dict[str, float]:
    summary = aggregate(records)
    summary["score_tf"] = zsre_score(summary, "tf")
    summary["score_em"] = zsre_score(summary, "em")
    summary["score"] = zsre_score(summary, "both")
    return summary


def _no_reference_eval(fn: Callable[..., list[dict[str, Any]]]) -> Callable[..., list[dict[str, Any]]]:
    """Adapt a metric that needs no pre-edit reference to the Suite.evaluate signature."""

    def evaluate(lm, cases, references, condition, *, batch_size: int = 32):
        return fn(lm, cases, condition, batch_size=batch_size)

    return evaluate


def _zsre_eval(lm, cases, references, condition, *, batch_size: int = 32):
    return zsre_evaluate(lm, cases, references, condition, batch_size=batch_size)


CF_HEADLINE = ("efficacy_success", "paraphrase_success", "neighbourhood_success", "score")
ZSRE_HEADLINE = ("reliability_tf", "generality_tf", "locality_tf", "reliability_em", "generality_em", "locality_em", "score")
MQUAKE_HEADLINE = ("edit_accuracy", "multihop_accuracy")

for _name in DATASETS.names():
    _spec = DATASETS.get(_name)
    if _name.startswith("counterfact"):
        suite = Suite(_name, _spec.description, _loader(_name), _no_reference_eval(counterfact_evaluate),
                      _counterfact_aggregate, CF_HEADLINE)
    elif _name.startswith("zsre"):
        suite = Suite(_name, _spec.description, _loader(_name), _zsre_eval, _zsre_aggregate, ZSRE_HEADLINE,
                      reference=zsre_reference)
    elif _name.startswith("mquake"):
        suite = Suite(_name, _spec.description, _loader(_name), _no_reference_eval(mquake_evaluate), aggregate,
                      MQUAKE_HEADLINE)
    else:
        continue
    if _name not in SUITES:
        SUITES.register(_name, suite)
