"""Per-case records -> run summary, and the harmonic-mean Scores papers headline.

Records are flat dicts from the suite evaluators: `case_id`, numeric metric fields, and
non-numeric extras (generations, raw NLLs) that summaries ignore. A field missing from some
records (e.g. portability) is averaged over the records that have it and its count is
reported as `n_<field>`, so a partial average is never mistaken for a full one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from kebench.errors import DataError


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean of non-negative rates; 0 if any is 0 (a method failing one axis scores 0)."""
    if not values:
        raise ValueError("harmonic_mean needs at least one value")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"harmonic_mean needs finite non-negative values, got {list(values)}")
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean, summed in order (`sum / len`: the numbers recorded so far depend on it)."""
    if not values:
        raise ValueError("mean needs at least one value")
    return sum(values) / len(values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, str)


def aggregate(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean of every numeric per-case field, plus `n_cases` and `n_<field>` for partial fields.

    Raises DataError on a record without case_id, a duplicate case, or a metric that is
    None/NaN/Inf or changes type: a case that could not be scored must not vanish from the mean.
    """
    if not records:
        raise DataError("no per-case records to aggregate: evaluate at least one case")
    seen: set[str] = set()
    values: dict[str, list[float]] = {}
    non_numeric: set[str] = set()
    for record in records:
        case_id = record.get("case_id")
        if case_id is None or case_id == "":
            raise DataError(f"per-case record without case_id: {sorted(record)}; every record must name its case")
        if str(case_id) in seen:
            raise DataError(f"case {case_id} appears twice in the records: evaluate each case once")
        seen.add(str(case_id))
        for key, value in record.items():
            if key == "case_id":
                continue
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                raise DataError(f"case {case_id}: metric {key!r} is {value!r}; it could not be scored")
            if _is_number(value):
                values.setdefault(key, []).append(float(value))
            else:
                non_numeric.add(key)
    mixed = non_numeric & set(values)
    if mixed:
        raise DataError(f"fields {sorted(mixed)} are numeric in some records and not in others")
    summary: dict[str, float] = {"n_cases": float(len(records))}
    for key in sorted(values):
        summary[key] = mean(values[key])
        if len(values[key]) != len(records):
            summary[f"n_{key}"] = float(len(values[key]))
    return summary


def _require(summary: Mapping[str, float], keys: Sequence[str]) -> list[float]:
    missing = [k for k in keys if k not in summary]
    if missing:
        raise DataError(f"summary lacks {missing} needed for the Score: evaluate cases with those probes")
    return [summary[k] for k in keys]


def counterfact_score(summary: Mapping[str, float]) -> float:
    """ROME/MEMIT Score: harmonic mean of efficacy, paraphrase and neighbourhood success."""
    return harmonic_mean(_require(summary, ["efficacy_success", "paraphrase_success", "neighbourhood_success"]))


def zsre_score(summary: Mapping[str, float], measure: str = "tf") -> float:
    """Harmonic mean of reliability, generality, locality by `measure`.

    "tf" (teacher-forced, MEMIT-style), "em" (greedy exact match), or "both": the six
    numbers together, the Score MeG's paper reports.
    """
    axes = ("reliability", "generality", "locality")
    measures = {"tf": ("tf",), "em": ("em",), "both": ("tf", "em")}
    if measure not in measures:
        raise ValueError(f"measure must be one of {sorted(measures)}, got {measure!r}")
    return harmonic_mean(_require(summary, [f"{a}_{m}" for m in measures[measure] for a in axes]))
