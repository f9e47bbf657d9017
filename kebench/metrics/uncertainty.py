"""How sure a run's numbers are: bootstrap intervals over cases, and the paired bootstrap test of a drop.

Protocol (both functions): a resample draws a run's n cases n times with replacement (numpy's
`Generator`, seeded, so the same inputs give the same intervals), each case carrying its pre- and
post-edit records together, and every aggregate is recomputed on the resample exactly as the run
computed it: `Suite.aggregate` of the pre-edit records, `kebench.suites.post_metrics` of the pair.

- `bootstrap_intervals`: the percentile interval of each aggregate over the resamples, at `level`.
- `paired_bootstrap_drop(s)`: two runs on the same cases (matched by case id) are resampled with the
  same draws; the drop of a metric (`metric_spec(name).worsening`, in the metric's own unit, > 0 is
  worse) is recomputed per resample. The drop is real at `level` when at least that fraction of the
  resampled drops is above 0 (equivalently, the one-sided percentile bound is above 0).

Speed: where an aggregate is a function of per-case means (every built-in suite's: means of the
record fields, Scores as harmonic means of those means), a resample's means are one matrix product
of the resampling counts with the per-case values, and the aggregate is called once per resample on
a single record holding those means. Paired metrics with a known per-case decomposition
(`RATIO_PARTS`: CounterFact's neighbourhood_kept, a ratio of per-case counts) are ratios of two such
products. Whether the shortcut holds is checked against the suite's own functions on the run and on
one resample; a metric for which it does not is recomputed from the resampled records (slow, exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kebench.errors import ConfigError, DataError, KebenchError
from kebench.metrics.counterfact import neighbourhood_kept, neighbourhood_kept_counts
from kebench.metrics.spec import metric_spec

Records = Sequence[Mapping[str, Any]]
Cases = Sequence[Mapping[str, Any]]  # results-file case records: {"case_id", "pre", "post"}

METHOD = "percentile bootstrap over cases (pre/post records resampled together)"

# paired metric -> per case (numerator, denominator) whose resampled sums give the metric as their ratio
RATIO_PARTS: dict[Callable[..., Any], Callable[[Records, Records], dict[str, tuple[np.ndarray, np.ndarray]]]] = {}


def _neighbourhood_kept_parts(pre: Records, post: Records) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    counts = np.array([neighbourhood_kept_counts(a, b) for a, b in zip(pre, post, strict=True)], dtype=np.float64)
    return {"neighbourhood_kept": (counts[:, 0], counts[:, 1])} if counts.size and counts[:, 1].sum() else {}


RATIO_PARTS[neighbourhood_kept] = _neighbourhood_kept_parts

_BLOCK_CELLS = 2_000_000  # resampling counts held at once (rows x cases), about 16 MB of float64


def check_level(level: float, n_resamples: int) -> None:
    """One-line errors for a confidence level outside (0, 1) or too few resamples."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"--level must be between 0 and 1, got {level:g}; e.g. --level 0.95")
    if n_resamples < 10:
        raise ConfigError(f"--resamples must be at least 10, got {n_resamples}; the default is 1000")


def resample_counts(n: int, n_resamples: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Blocks of (indices, counts): row b of `indices` lists the n cases drawn (with replacement) in
    resample b, row b of `counts` how often each case was drawn. Seeded: the same blocks every time."""
    rng = np.random.default_rng(seed)
    rows = max(1, min(n_resamples, _BLOCK_CELLS // max(n, 1)))
    done = 0
    while done < n_resamples:
        b = min(rows, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + n * np.arange(b)[:, None]).ravel()
        yield idx, np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, str)


def _renamed(records: Records, idx: np.ndarray) -> list[dict[str, Any]]:
    """A resample's records, each drawn copy with its own case id (aggregates refuse a case twice)."""
    return [{**records[i], "case_id": f"{records[i]['case_id']}#{j}"} for j, i in enumerate(idx)]


def _safe(fn: Callable[[], Mapping[str, Any]]) -> Mapping[str, Any]:
    """An aggregate of a resample, or nothing where the resample cannot be scored (e.g. it drew no case
    with a partial field a Score needs): those resamples are left out of that metric's percentiles."""
    try:
        return fn()
    except (KebenchError, ValueError, ZeroDivisionError, KeyError):
        return {}


class _Aggregated:
    """One side's records (pre or post) and `aggregate`, ready to be recomputed on resamples."""

    def __init__(self, aggregate: Callable[[list[dict[str, Any]]], Mapping[str, float]], records: Records) -> None:
        self.aggregate = aggregate
        self.records = records
        self.point = dict(aggregate(list(records)))
        fields: dict[str, None] = {}
        for r in records:
            fields.update((k, None) for k, v in r.items() if k != "case_id" and _is_number(v))
        self.fields = list(fields)
        n, k = len(records), len(self.fields)
        self.values = np.zeros((n, k))
        self.present = np.zeros((n, k))
        for i, r in enumerate(records):
            for j, f in enumerate(self.fields):
                v = r.get(f)
                if _is_number(v):
                    self.values[i, j] = float(v)
                    self.present[i, j] = 1.0
        first = records[0] if records else {}
        self.constants = {
            key: v for key, v in first.items()
            if key != "case_id" and isinstance(v, str) and all(r.get(key) == v for r in records)
        }
        self.fast: set[str] = set()

    def _from_means(self, means: np.ndarray) -> Mapping[str, Any]:
        record = {"case_id": "resample", **self.constants}
        record.update((f, float(m)) for f, m in zip(self.fields, means) if math.isfinite(m))
        return _safe(lambda: self.aggregate([record]))

    def means(self, counts: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (counts @ self.values) / (counts @ self.present)

    def verify(self, wanted: set[str], idx: np.ndarray, counts: np.ndarray) -> None:
        """Which of `wanted` the means shortcut reproduces, on the run and on one resample."""
        whole = self._from_means(self.means(np.ones((1, len(self.records))))[0])
        one = _safe(lambda: self.aggregate(_renamed(self.records, idx)))
        via = self._from_means(self.means(counts[None, :])[0])
        self.fast = {
            m for m in wanted
            if _is_number(whole.get(m)) and _close(float(whole[m]), float(self.point[m]))
            and (m not in one or (_is_number(via.get(m)) and _close(float(via[m]), float(one[m]))))
        }

    def fill(self, out: dict[str, np.ndarray], at: int, idx: np.ndarray, counts: np.ndarray) -> None:
        """Write the resampled values of the metrics in `out` for the resamples of one block, from row `at`."""
        slow = [m for m in out if m not in self.fast]
        for b, row in enumerate(self.means(counts)):
            summary = self._from_means(row) if self.fast else {}
            if slow:
                summary = {**summary, **{k: v for k, v in _safe(lambda: self.aggregate(_renamed(self.records, idx[b]))).items()
                                         if k in slow}}
            for m, arr in out.items():
                v = summary.get(m)
                arr[at + b] = float(v) if _is_number(v) else np.nan


class _Paired:
    """A suite's paired metrics (post-edit metrics that need each case's pre-edit record too)."""

    def __init__(self, paired: Callable[..., Mapping[str, float]] | None, pre: Records, post: Records) -> None:
        self.paired, self.pre, self.post = paired, pre, post
        self.point = dict(paired(list(pre), list(post))) if paired is not None else {}
        parts = RATIO_PARTS.get(paired) if paired is not None else None
        self.parts = {
            m: (num, den) for m, (num, den) in (parts(pre, post) if parts else {}).items()
            if m in self.point and den.sum() and _close(float(num.sum() / den.sum()), float(self.point[m]))
        }

    def fill(self, out: dict[str, np.ndarray], at: int, idx: np.ndarray, counts: np.ndarray) -> None:
        slow = [m for m in out if m not in self.parts]
        for m in out:
            if m in self.parts:
                num, den = self.parts[m]
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[m][at : at + len(counts)] = (counts @ num) / (counts @ den)
        if slow and self.paired is not None:
            for b in range(len(counts)):
                summary = _safe(lambda: self.paired(_renamed(self.pre, idx[b]), _renamed(self.post, idx[b])))
                for m in slow:
                    v = summary.get(m)
                    out[m][at + b] = float(v) if _is_number(v) else np.nan


class _Run:
    """One run's cases under resampling: the pre-edit aggregates and the post-edit metrics."""

    def __init__(self, suite: Any, pre: Records, post: Records) -> None:
        if not pre or len(pre) != len(post):
            raise DataError(f"a bootstrap needs one pre- and one post-edit record per case, got {len(pre)} and {len(post)}")
        self.n = len(pre)
        self.pre = _Aggregated(suite.aggregate, pre)
        self.post = _Aggregated(suite.aggregate, post)
        self.paired = _Paired(suite.paired, pre, post)
        self.post_point = {**self.post.point, **self.paired.point}

    def sample(self, pre_metrics: Sequence[str], post_metrics: Sequence[str], n_resamples: int, seed: int,
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Each metric's value in each of `n_resamples` resamples (NaN where a resample cannot score it)."""
        pre = {m: np.full(n_resamples, np.nan) for m in pre_metrics}
        post_agg = {m: np.full(n_resamples, np.nan) for m in post_metrics if m not in self.paired.point}
        paired = {m: np.full(n_resamples, np.nan) for m in post_metrics if m in self.paired.point}
        at = 0
        for idx, counts in resample_counts(self.n, n_resamples, seed):
            if at == 0:
                self.pre.verify(set(pre), idx[0], counts[0])
                self.post.verify(set(post_agg), idx[0], counts[0])
            if pre:
                self.pre.fill(pre, at, idx, counts)
            if post_agg:
                self.post.fill(post_agg, at, idx, counts)
            if paired:
                self.paired.fill(paired, at, idx, counts)
            at += len(counts)
        return pre, {**post_agg, **paired}


def _interval_metrics(point: Mapping[str, Any]) -> list[str]:
    """The aggregates an interval is given for: every number but the counts (n_cases, n_<field>)."""
    return [m for m, v in point.items() if _is_number(v) and not m.startswith("n_")]


def _percentiles(samples: dict[str, np.ndarray], level: float) -> dict[str, list[float]]:
    out = {}
    for m, values in samples.items():
        finite = values[np.isfinite(values)]
        if finite.size:
            lo, hi = np.percentile(finite, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
            out[m] = [float(lo), float(hi)]
    return out


def interval_record(
    suite: Any, pre_records: Records, post_records: Records, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0,
) -> dict[str, Any]:
    """What a results file stores under metrics.intervals: the level, the resamples, and [lo, hi] for
    every pre-edit aggregate and post-edit metric, from one resampling of the cases."""
    check_level(level, n_resamples)
    run = _Run(suite, pre_records, post_records)
    pre, post = run.sample(_interval_metrics(run.pre.point), _interval_metrics(run.post_point), n_resamples, seed)
    return {"level": level, "n_resamples": n_resamples, "seed": seed, "method": METHOD,
            "pre": _percentiles(pre, level), "post": _percentiles(post, level)}


def bootstrap_intervals(
    suite: Any, pre_records: Records, post_records: Records, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0,
) -> dict[str, list[float]]:
    """[lo, hi] at `level` for each post-edit metric (`post_metrics(suite, pre, post)`) of the run whose
    per-case records are `pre_records` and `post_records` (the same cases, in the same order)."""
    check_level(level, n_resamples)
    run = _Run(suite, pre_records, post_records)
    return _percentiles(run.sample((), _interval_metrics(run.post_point), n_resamples, seed)[1], level)


@dataclass(frozen=True)
class DropTest:
    """The paired bootstrap's verdict on one metric: `observed` drop (metric's unit, > 0 worse),
    the fraction of resamples in which the candidate is worse, and the drop's two-sided interval."""

    metric: str
    observed: float
    prob_worse: float
    interval: tuple[float, float]  # two-sided, at `level`
    lower: float  # one-sided bound: the drop exceeds it with probability `level`
    level: float
    n_cases: int
    n_resamples: int

    @property
    def real(self) -> bool:
        """The candidate is worse at `level`: at least that fraction of the resampled drops is above 0."""
        return self.observed > 0 and self.prob_worse >= self.level


def _aligned(baseline: Cases, candidate: Cases) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The two runs' case records in the baseline's order, or a one-line DataError if they differ in cases."""
    if not baseline or not candidate:
        which = "baseline" if not baseline else "candidate"
        raise DataError(f"the {which} has no per-case records to pair; a paired bootstrap needs both runs' `cases`")
    by_id = {str(c["case_id"]): c for c in candidate}
    ids = [str(c["case_id"]) for c in baseline]
    only_base = [i for i in ids if i not in by_id]
    only_cand = sorted(set(by_id) - set(ids))
    if only_base or only_cand or len(set(ids)) != len(ids):
        example = (only_base or only_cand or ["a duplicate"])[0]
        raise DataError(
            f"the runs do not share their cases ({len(only_base)} only in the baseline, {len(only_cand)} only in the "
            f"candidate, e.g. {example}); pair runs made with the same --dataset, --scale, --seed and --filter"
        )
    return list(baseline), [by_id[i] for i in ids]


def paired_bootstrap_drops(
    suite: Any, baseline_cases: Cases, candidate_cases: Cases, metrics: Sequence[str], *,
    n_resamples: int = 1000, level: float = 0.95, seed: int = 0,
) -> dict[str, DropTest]:
    """`paired_bootstrap_drop` for several post-edit metrics from one resampling (the same draws for all)."""
    check_level(level, n_resamples)
    base, cand = _aligned(baseline_cases, candidate_cases)
    runs = [_Run(suite, [c["pre"] for c in cs], [c["post"] for c in cs]) for cs in (base, cand)]
    for m in metrics:
        if not all(_is_number(r.post_point.get(m)) for r in runs):
            raise DataError(f"metric {m!r} cannot be recomputed from both runs' per-case records; only the stored values compare")
    (_, b), (_, c) = (r.sample((), metrics, n_resamples, seed) for r in runs)
    out = {}
    for m in metrics:
        spec = metric_spec(m)
        drops = spec.worsening(b[m], c[m])
        drops = drops[np.isfinite(drops)]
        lo, hi = np.percentile(drops, [100 * (1 - level) / 2, 100 * (1 + level) / 2]) if drops.size else (np.nan, np.nan)
        out[m] = DropTest(
            metric=m,
            observed=float(spec.worsening(float(runs[0].post_point[m]), float(runs[1].post_point[m]))),
            prob_worse=float(np.mean(drops > 0)) if drops.size else 0.0,
            interval=(float(lo), float(hi)),
            lower=float(np.percentile(drops, 100 * (1 - level))) if drops.size else float("nan"),
            level=level,
            n_cases=len(base),
            n_resamples=n_resamples,
        )
    return out


def paired_bootstrap_drop(
    suite: Any, baseline_cases: Cases, candidate_cases: Cases, metric: str, *,
    n_resamples: int = 1000, level: float = 0.95, seed: int = 0,
) -> DropTest:
    """Is `metric` worse in the candidate run than in the baseline, beyond resampling noise? Both runs'
    case records ({"case_id", "pre", "post"}) are matched by case id and resampled with the same draws;
    a DataError names the difference when they do not hold the same cases."""
    return paired_bootstrap_drops(suite, baseline_cases, candidate_cases, [metric],
                                  n_resamples=n_resamples, level=level, seed=seed)[metric]
