import math

import pytest

from kebench.errors import DataError
from kebench.metrics.aggregate import aggregate, counterfact_score, harmonic_mean, zsre_score


def test_harmonic_mean():
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.9, 0.0, 1.0]) == 0.0
    assert harmonic_mean([0.4]) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        harmonic_mean([])
    with pytest.raises(ValueError):
        harmonic_mean([0.5, -0.1])


def test_aggregate_means_counts_and_ignores_non_numeric():
    records = [
        {"case_id": "a", "x": 1.0, "y": True, "generations": ["..."], "nll": {"rewrite": [[1, 2]]}},
        {"case_id": "b", "x": 0.0},
        {"case_id": "c", "x": 0.5},
    ]
    summary = aggregate(records)
    assert summary == {"n_cases": 3.0, "x": 0.5, "y": 1.0, "n_y": 1.0}


@pytest.mark.parametrize(
    "records, match",
    [
        ([{"case_id": "a", "x": math.nan}], "could not be scored"),
        ([{"case_id": "a", "x": None}], "could not be scored"),
        ([{"x": 1.0}], "case_id"),
        ([{"case_id": "a", "x": 1.0}, {"case_id": "a", "x": 0.0}], "twice"),
        ([{"case_id": "a", "x": 1.0}, {"case_id": "b", "x": "high"}], "numeric in some"),
        ([], "no per-case"),
    ],
)
def test_aggregate_refuses_unscorable_records(records, match):
    with pytest.raises(DataError, match=match):
        aggregate(records)


def test_scores():
    summary = {"efficacy_success": 1.0, "paraphrase_success": 0.5, "neighbourhood_success": 0.5}
    assert counterfact_score(summary) == pytest.approx(3 / (1 + 2 + 2))
    zs = {"reliability_tf": 1.0, "generality_tf": 0.5, "locality_tf": 1.0,
          "reliability_em": 0.5, "generality_em": 0.25, "locality_em": 0.5}
    assert zsre_score(zs) == pytest.approx(3 / (1 + 2 + 1))
    assert zsre_score(zs, "em") == pytest.approx(3 / (2 + 4 + 2))
    assert zsre_score(zs, "both") == pytest.approx(6 / (1 + 2 + 1 + 2 + 4 + 2))
    with pytest.raises(DataError):
        counterfact_score({"efficacy_success": 1.0})
    with pytest.raises(ValueError):
        zsre_score(zs, "prefix")
