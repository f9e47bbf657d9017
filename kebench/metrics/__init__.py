"""Benchmark metrics: pure functions over scores and strings, and one evaluator per suite.

Every evaluator takes any chunk of cases and returns one JSON-able record per case (with
`case_id`); `aggregate` turns records into a summary. Rates are fractions in [0, 1].
"""

from kebench.metrics.aggregate import aggregate, counterfact_score, harmonic_mean, zsre_score
from kebench.metrics.counterfact import counterfact_evaluate
from kebench.metrics.mquake import mquake_evaluate
from kebench.metrics.zsre import zsre_evaluate, zsre_reference

__all__ = [
    "aggregate",
    "counterfact_evaluate",
    "counterfact_score",
    "harmonic_mean",
    "mquake_evaluate",
    "zsre_evaluate",
    "zsre_reference",
    "zsre_score",
]
