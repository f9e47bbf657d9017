"""Headline metrics know which way is better and their unit: the report gate, its table and the plots use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kebench.compare import ResultSummary, find_regressions, markdown_report
from kebench.metrics.spec import METRICS, Metric
from kebench.plot import _values
from kebench.suites import SUITES, LoadedData, Suite, all_suites

LOWER_IS_BETTER = Metric(higher_is_better=False, unit="nats")

if "toy-nll" not in SUITES:
    SUITES.register("toy-nll", Suite("toy-nll", "a suite whose headline metric is lower-is-better", lambda *a, **k: [],
                                     lambda records: {}, headline=("mean_nll",), loader=lambda f, fmt: LoadedData([], [])))


def _summary(dataset: str, post: dict[str, float]) -> ResultSummary:
    return ResultSummary(Path(f"{dataset}.json"), "memit", dataset, 20, "batch", "default", 0, pre=dict(post), post=post,
                         seconds_per_edit=0.5, total_seconds=10.0)


def _gate(dataset: str, baseline: dict[str, float], candidate: dict[str, float], tolerance: float):
    pairs, regressions, missing = find_regressions([_summary(dataset, baseline)], [_summary(dataset, candidate)], tolerance)
    return regressions, markdown_report(pairs, regressions, missing, tolerance)


CF = {"efficacy_success": 0.9, "paraphrase_success": 0.6, "neighbourhood_success": 0.8, "score": 0.75}


def test_entropy_is_gated_and_shown_in_bits():
    regressions, report = _gate("counterfact-rome", {**CF, "ngram_entropy": 5.63}, {**CF, "ngram_entropy": 5.61}, 0.05)
    assert not regressions and "**PASS**" in report
    assert "| ngram_entropy (bits) | 5.63 | 5.61 | -0.02 | ok |" in report and "561.0" not in report
    assert "| efficacy_success | 90.0 | 90.0 | +0.0 | ok |" in report  # rates still in %

    regressions, report = _gate("counterfact-rome", {**CF, "ngram_entropy": 5.63}, {**CF, "ngram_entropy": 5.50}, 0.05)
    assert [r.metric for r in regressions] == ["ngram_entropy"] and "**FAIL**" in report


def test_a_lower_is_better_metric_fails_the_gate_when_it_rises(monkeypatch):
    monkeypatch.setitem(METRICS, "mean_nll", LOWER_IS_BETTER)
    regressions, report = _gate("toy-nll", {"mean_nll": 2.0}, {"mean_nll": 2.1}, 0.05)
    assert [(r.metric, r.candidate) for r in regressions] == [("mean_nll", 2.1)]
    assert "| mean_nll (nats) ↓ | 2.00 | 2.10 | +0.10 | REGRESSION |" in report
    assert not _gate("toy-nll", {"mean_nll": 2.0}, {"mean_nll": 1.5}, 0.05)[0]  # a fall is an improvement
    assert not _gate("toy-nll", {"mean_nll": 2.0}, {"mean_nll": 2.04}, 0.05)[0]  # within tolerance


def test_rates_still_fail_on_a_drop_and_pass_on_a_rise():
    assert [r.metric for r in _gate("counterfact", CF, {**CF, "efficacy_success": 0.85}, 0.02)[0]] == ["efficacy_success"]
    assert not _gate("counterfact", CF, {**CF, "efficacy_success": 0.99}, 0.02)[0]


def test_plots_show_each_metric_in_its_unit():
    run = _summary("counterfact-rome", {**CF, "ngram_entropy": 5.61})
    assert _values((run,), "ngram_entropy") == [5.61]
    assert _values((run,), "efficacy_success") == [pytest.approx(90.0)]


def test_every_builtin_headline_metric_is_declared():
    builtin = [s for s in all_suites() if s.evaluate.__module__.startswith("kebench.")]
    assert builtin
    assert {m for s in builtin for m in s.headline} <= set(METRICS)
