"""What a metric's number means: which way is better and in which unit (tables, plots, the gate).

`METRICS` declares every headline metric of the built-in suites. A name it lacks (a plugin
suite's, an old results file's) is taken for a higher-is-better fraction, kebench's default.
"""

from __future__ import annotations

from dataclasses import dataclass

PERCENT = "%"


@dataclass(frozen=True)
class Metric:
    """`unit` is PERCENT for a fraction in [0, 1] (shown ×100), else the unit the value is in, shown as is."""

    higher_is_better: bool = True
    unit: str = PERCENT

    def shown(self, value: float) -> float:
        """The value as tables and plots show it."""
        return 100 * value if self.unit == PERCENT else value

    def cell(self, value: object, *, signed: bool = False) -> str:
        """A table cell: fractions in % to one decimal, other units to two; `signed` for differences."""
        if not isinstance(value, (int, float)):
            return "–"
        return f"{self.shown(float(value)):{'+' if signed else ''}.{1 if self.unit == PERCENT else 2}f}"

    def worsening(self, baseline: float, candidate: float) -> float:
        """How much worse `candidate` is than `baseline`, in the metric's own unit (negative: better)."""
        return baseline - candidate if self.higher_is_better else candidate - baseline


METRICS: dict[str, Metric] = {
    # CounterFact
    "efficacy_success": Metric(),
    "paraphrase_success": Metric(),
    "neighbourhood_success": Metric(),
    "neighbourhood_kept": Metric(),
    "score": Metric(),  # every suite's harmonic mean of its rates
    "ngram_entropy": Metric(unit="bits"),
    # ZsRE
    **{f"{axis}_{kind}": Metric() for axis in ("reliability", "generality", "locality") for kind in ("tf", "em")},
    "reliability_contains": Metric(),
    "generality_contains": Metric(),
    # general ability (kebench.metrics.general), every suite
    "perplexity": Metric(higher_is_better=False, unit="ppl"),
    "retained_knowledge": Metric(),
    "generic_fluency": Metric(unit="bits"),
    # MQuAKE
    "edit_accuracy": Metric(),
    "multihop_accuracy": Metric(),
}


def metric_spec(name: str) -> Metric:
    """The declaration of metric `name` (a higher-is-better fraction where it has none)."""
    return METRICS.get(name, Metric())
