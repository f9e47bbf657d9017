"""Reading results files and lining them up: the `compare` table and the `report` regression gate."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kebench.errors import ConfigError, DataError, KebenchError
from kebench.metrics.spec import PERCENT, metric_spec
from kebench.results import Metrics, Retention, RunResult, from_json_at, read_result

if TYPE_CHECKING:
    from kebench.metrics.uncertainty import DropTest


@dataclass(frozen=True)
class ResultSummary:
    """The parts of a results file that tables and gates need."""

    path: Path
    editor: str
    dataset: str
    scale: int
    mode: str
    model: str
    seed: int
    pre: dict[str, float]
    post: dict[str, float]
    seconds_per_edit: float
    total_seconds: float
    overrides: tuple[str, ...] = ()  # RunIdentity.overrides: settings apart from the editor's defaults (rows and gate keys)
    peak_memory_mb: float | None = None
    from_fit_cache: bool = False  # part of the fitting was read from kebench.fit_cache: s/edit is not a fresh fit's
    device: str = "cpu"  # "cpu", or the GPU's name: times (and peak memory, then the GPU's) are that device's
    case_filter: str | None = None  # `run --filter`: the run's cases are a subset (its own table and gate key)
    # metrics.intervals (kebench.metrics.uncertainty): {"level", "n_resamples", "pre": {m: [lo, hi]}, "post": ...}
    intervals: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    retention: Retention | None = field(default=None, compare=False, repr=False)  # a sequential run's --eval-at points

    @property
    def key(self) -> tuple[str, str, str, int, str, tuple[str, ...], str | None]:
        """Runs are comparable when they agree on this (the seed may differ between reference and candidate)."""
        return (self.model, self.editor, self.dataset, self.scale, self.mode, self.overrides, self.case_filter)

    @property
    def suite_label(self) -> str:
        """The suite, with the filter that chose its cases, e.g. "counterfact:known"."""
        return self.dataset + (f":{self.case_filter}" if self.case_filter else "")

    @property
    def variant(self) -> str:
        """The editor, its overrides and a GPU if it ran on one, e.g. "meg [gate.enabled=false]",
        "memit @ NVIDIA H200"."""
        return (
            self.editor
            + (f" [{', '.join(self.overrides)}]" if self.overrides else "")
            + (f" @ {self.device}" if self.device != "cpu" else "")
        )

    @property
    def label(self) -> str:
        return f"{self.variant}/{self.suite_label}/n{self.scale}/{self.mode}"


def load_result(path: Path, *, level: float | None = None, n_resamples: int = 1000) -> ResultSummary:
    """The summary of the results file at `path` (read through kebench.results). With `level`, its bootstrap
    intervals at that level too: the stored ones where they match, else computed from the file's per-case
    records (older files)."""
    result = read_result(Path(path))
    summary = summarize(Path(path), result)
    if level is None:
        return summary
    return dataclasses.replace(summary, intervals=_intervals(summary, result, level, n_resamples))


def _intervals(summary: ResultSummary, result: RunResult, level: float, n_resamples: int) -> dict[str, Any] | None:
    """Intervals at `level` over `n_resamples`: the file's own if it stored those, else from its cases (None
    where it has no per-case records or its suite is not installed)."""
    from kebench.metrics.uncertainty import interval_record
    from kebench.suites import get_suite

    stored = summary.intervals
    if stored and stored.get("level") == level and stored.get("n_resamples") == n_resamples:
        return stored
    if not result.cases:
        return None
    try:
        suite = get_suite(summary.dataset)
    except ConfigError:
        return None
    cases = result.cases
    return interval_record(suite, [c["pre"] for c in cases], [c["post"] for c in cases], n_resamples=n_resamples, level=level)


def load_cases(path: Path) -> list[dict]:
    """The per-case records ({"case_id", "pre", "post"}) of the results file at `path` (a one-line
    DataError where the file cannot be read again or has none)."""
    try:
        cases = read_result(Path(path)).cases
    except KebenchError as exc:
        raise DataError(f"cannot read the per-case records of {path} ({exc})") from None
    if not cases:
        raise DataError(f"{Path(path).name} has no per-case records (`cases`) to pair")
    return list(cases)


def summarize(path: Path, data: RunResult | dict) -> ResultSummary:
    """The summary of a results file (a RunResult, or its parsed JSON) at `path`. Its row and gate key are
    the identity the run recorded (kebench.results.RunIdentity; a version 1 file's is derived on reading)."""
    result = data if isinstance(data, RunResult) else from_json_at(path, data)
    identity, metrics = result.identity, result.metrics
    try:
        return ResultSummary(
            path=path,
            editor=identity.editor,
            dataset=identity.dataset,
            scale=identity.scale,
            mode=identity.mode + (f"-b{identity.batch_size}" if identity.mode == "sequential" else ""),
            model=identity.model,
            seed=result.run.seed,
            pre={**metrics.pre, **_general(metrics, "pre")},
            post={**_with_paired(identity.dataset, metrics.post, result.cases), **_general(metrics, "post")},
            seconds_per_edit=float(result.seconds_per_edit),
            total_seconds=float(result.timings_s.get("total", 0.0)),
            overrides=identity.overrides,
            peak_memory_mb=result.memory.peak_mb,
            from_fit_cache=used_fit_cache(result),
            device=result.provenance.hardware.label,
            case_filter=identity.case_filter,
            intervals=metrics.intervals,
            retention=result.retention,
        )
    except (KeyError, TypeError, ValueError) as exc:  # per-case records the suite cannot pair
        raise ConfigError(f"{path} is not a kebench results file ({type(exc).__name__}: {exc})") from None


def used_fit_cache(result: RunResult) -> bool:
    """Whether a run's editing read fitted values, neurons, a trained generator or finished update steps
    from the fit cache (its s/edit then leaves that work out)."""
    return any(
        step.stats.get("v_cached_groups") or step.stats.get("fit_cached_chunks") or step.stats.get("diffusion_from_cache")
        or step.stats.get("update_resumed_steps")
        for step in result.editor_stats
    )


CACHED_MARK = "†"
CACHED_NOTE = (
    f"{CACHED_MARK} part of the fitting (or a resumed update's finished layers) was read from the fit cache (kebench.fit_cache), so s/edit is less than "
    "a fresh fit's; `editor_stats` in the results file records what the cached part took when it was fitted."
)


def _with_paired(dataset: str, post: dict[str, float], cases: Sequence[dict]) -> dict[str, float]:
    """Post metrics, with the suite's paired metrics computed from the per-case records when the
    file predates them (the records hold everything they need; nothing is estimated)."""
    from kebench.suites import get_suite, suite_names

    if not cases or dataset not in suite_names():
        return post
    suite = get_suite(dataset)
    if suite.paired is None:
        return post
    extra = suite.paired([c["pre"] for c in cases], [c["post"] for c in cases])
    return {**extra, **post}


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for *.json results."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(
                sorted(
                    q
                    for q in p.rglob("*.json")
                    if not q.name.startswith(".") and not any(part.endswith(".ckpt") for part in q.parts)
                )
            )
        else:
            out.append(p)
    if not out:
        raise ConfigError(f"no results files found in {', '.join(map(str, paths))}")
    return out


#: general ability (kebench.metrics.general), shown after each suite's own metrics where a run measured it
GENERAL_METRICS = ("perplexity", "retained_knowledge", "generic_fluency")


def _general(metrics: Metrics, side: str) -> dict[str, float]:
    """The general-ability numbers of one side ("pre" or "post") of a results file, as metrics (none if not measured)."""
    block = (metrics.general or {}).get(side) or {}
    return {k: float(v) for k, v in block.items() if k in GENERAL_METRICS and isinstance(v, (int, float))}


def headline_metrics(summaries: list[ResultSummary]) -> list[str]:
    """Metric columns to show: each suite's headline metrics, in a stable order, then general ability."""
    from kebench.suites import get_suite

    cols: list[str] = []
    for s in summaries:
        try:
            names = get_suite(s.dataset).headline
        except ConfigError:
            names = sorted(k for k, v in s.post.items() if isinstance(v, (int, float)))
        for n in names:
            if n in s.post and n not in cols:
                cols.append(n)
    return cols + [g for g in GENERAL_METRICS if g not in cols and any(g in s.post for s in summaries)]


@dataclass(frozen=True)
class Regression:
    """A headline metric worse in the candidate than in the reference by more than the tolerance."""

    label: str
    metric: str
    baseline: float
    candidate: float
    test: DropTest | None = None  # the paired bootstrap over the runs' shared cases (None: not paired)

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline


@dataclass(frozen=True)
class GateResult:
    """The regression gate's findings (`regression_gate`)."""

    pairs: list[tuple[ResultSummary, ResultSummary]]
    regressions: list[Regression]  # beyond the tolerance and, where paired, real at `level`: the gate fails
    noise: list[Regression]  # beyond the tolerance, but within resampling noise by the paired bootstrap
    missing: list[ResultSummary]  # reference runs without a candidate: the gate fails
    unpaired: list[tuple[str, str]]  # (run, why its cases could not be paired): judged by the tolerance alone
    tolerance: float
    level: float | None  # None: the tolerance alone decides
    n_resamples: int = 1000

    @property
    def failed(self) -> bool:
        return bool(self.regressions or self.missing)


def _gate_labels(runs: list[ResultSummary]) -> dict[int, str]:
    """Each run's label, with its seed where several runs of one configuration differ only in seed."""
    from collections import Counter

    shared = Counter(r.key for r in runs)
    return {id(r): r.label + (f"/s{r.seed}" if shared[r.key] > 1 else "") for r in runs}


def regression_gate(
    baseline: list[ResultSummary], candidate: list[ResultSummary], tolerance: float, *,
    level: float | None = 0.95, n_resamples: int = 1000, seed: int = 0,
) -> GateResult:
    """Pair runs by key (the same seed first, where the candidates have it) and judge each headline metric.

    A metric regresses when it got worse by more than `tolerance` (in the metric's own unit: a fraction for
    rates, bits for n-gram entropy; worse is a drop, or a rise for a lower-is-better metric,
    kebench.metrics.spec) AND, where the two runs hold the same cases, a paired bootstrap over those cases
    (kebench.metrics.uncertainty.paired_bootstrap_drops, `n_resamples` draws seeded by `seed`) finds the
    drop real at `level`. Runs whose cases cannot be paired (other cases, no per-case records) are judged
    by the tolerance alone, and listed in `unpaired`; `level=None` judges every run by the tolerance alone.
    """
    from kebench.metrics.uncertainty import check_level
    from kebench.suites import get_suite

    if level is not None:
        check_level(level, n_resamples)
    same_seed = {(c.key, c.seed): c for c in candidate}
    same_key = {c.key: c for c in candidate}
    labels = _gate_labels(baseline)
    pairs, regressions, noise, missing, unpaired = [], [], [], [], []
    for b in baseline:
        c = same_seed.get((b.key, b.seed)) or same_key.get(b.key)
        if c is None:
            missing.append(b)
            continue
        pairs.append((b, c))
        beyond = []
        for metric in get_suite(b.dataset).headline:
            if metric not in b.post:
                continue
            if metric not in c.post:
                regressions.append(Regression(labels[id(b)], metric, float(b.post[metric]), float("nan")))
                continue
            if metric_spec(metric).worsening(float(b.post[metric]), float(c.post[metric])) > tolerance:
                beyond.append(Regression(labels[id(b)], metric, float(b.post[metric]), float(c.post[metric])))
        if not beyond or level is None:
            regressions += beyond
            continue
        try:
            tests = paired_drops(b, c, [r.metric for r in beyond], level=level, n_resamples=n_resamples, seed=seed)
        except (KebenchError, KeyError, TypeError, ValueError) as exc:  # e.g. other cases: the tolerance decides
            why = str(exc) if isinstance(exc, KebenchError) else f"its records cannot be recomputed ({type(exc).__name__}: {exc})"
            unpaired.append((labels[id(b)], why))
            regressions += beyond
            continue
        for r in beyond:
            judged = dataclasses.replace(r, test=tests[r.metric])
            (regressions if judged.test.real else noise).append(judged)
    return GateResult(pairs, regressions, noise, missing, unpaired, tolerance, level, n_resamples)


def paired_drops(
    baseline: ResultSummary, candidate: ResultSummary, metrics: list[str], *,
    level: float = 0.95, n_resamples: int = 1000, seed: int = 0,
) -> dict[str, DropTest]:
    """The paired bootstrap of `metrics` between two results files, from their per-case records."""
    from kebench.metrics.uncertainty import paired_bootstrap_drops
    from kebench.suites import get_suite

    return paired_bootstrap_drops(
        get_suite(baseline.dataset), load_cases(baseline.path), load_cases(candidate.path), metrics,
        n_resamples=n_resamples, level=level, seed=seed,
    )


def find_regressions(
    baseline: list[ResultSummary], candidate: list[ResultSummary], tolerance: float, *,
    level: float | None = 0.95, n_resamples: int = 1000, seed: int = 0,
) -> tuple[list[tuple[ResultSummary, ResultSummary]], list[Regression], list[ResultSummary]]:
    """(pairs, regressions, baselines with no candidate) of `regression_gate`."""
    gate = regression_gate(baseline, candidate, tolerance, level=level, n_resamples=n_resamples, seed=seed)
    return gate.pairs, gate.regressions, gate.missing


def evidence(r: Regression, level: float | None) -> str:
    """What the paired bootstrap said about a change beyond the tolerance, for a report's last column."""
    if r.test is None:
        return "not paired: tolerance alone" if level is not None else ""
    spec, t = metric_spec(r.metric), r.test
    return (f"P(worse) {t.prob_worse:.3f}, drop {spec.cell(t.interval[0])} to {spec.cell(t.interval[1])} "
            f"at {t.level:.0%} ({t.n_cases} cases)")


def gate_method(level: float | None, n_resamples: int) -> str:
    """One sentence on how the gate decides, for the reports' footers."""
    if level is None:
        return "A regression is a change for the worse larger than the tolerance (in the metric's own unit; a fraction for rates)."
    return (
        "A regression is a change for the worse larger than the tolerance (in the metric's own unit; a fraction for "
        f"rates) that a paired bootstrap over the two runs' shared cases ({n_resamples} resamples of the cases, "
        f"each with its reference and candidate records) finds real at the {level:.0%} level: the candidate is worse in "
        f"at least {level:.0%} of the resamples (P(worse)). A change beyond the tolerance that is not is resampling "
        "noise; runs that do not share their cases are judged by the tolerance alone."
    )


def markdown_report(
    pairs: list[tuple[ResultSummary, ResultSummary]],
    regressions: list[Regression],
    missing: list[ResultSummary],
    tolerance: float,
    *,
    noise: list[Regression] = (),
    unpaired: list[tuple[str, str]] = (),
    level: float | None = None,
    n_resamples: int = 1000,
) -> str:
    """The full report: the verdict, a row per compared headline metric, the runs judged by tolerance alone."""
    from kebench.suites import get_suite

    lines = ["# kebench regression report", ""]
    verdict = "FAIL" if regressions or missing else "PASS"
    judged = f" and real at the {level:.0%} level (paired bootstrap)" if level is not None else ""
    lines.append(
        f"**{verdict}**: {len(pairs)} run(s) compared, {len(regressions)} regression(s) beyond "
        f"tolerance {tolerance:.3f}{judged}, "
        + (f"{len(noise)} change(s) beyond the tolerance within resampling noise, " if noise else "")
        + f"{len(missing)} reference run(s) without a candidate."
    )
    lines.append("")
    lines.append("| run | metric | reference | candidate | delta | | paired bootstrap |")
    lines.append("|---|---|---:|---:|---:|---|---|")
    labels = _gate_labels([b for b, _ in pairs] + list(missing))
    judged_rows = {(r.label, r.metric): r for r in regressions} | {(r.label, r.metric): r for r in noise}
    bad = {(r.label, r.metric) for r in regressions}
    for b, c in pairs:
        for metric in get_suite(b.dataset).headline:
            if metric not in b.post:
                continue
            spec, cv = metric_spec(metric), c.post.get(metric)
            cs = "missing" if cv is None else spec.cell(cv)
            ds = "" if cv is None else spec.cell(cv - b.post[metric], signed=True)
            row = (labels[id(b)], metric)
            flag = "REGRESSION" if row in bad else "noise" if row in judged_rows else "ok"
            note = evidence(judged_rows[row], level) if row in judged_rows else ""
            lines.append(f"| {labels[id(b)]} | {_metric_label(metric)} | {spec.cell(b.post[metric])} | {cs} | {ds} | {flag} | {note} |")
    for m in missing:
        lines.append(f"| {labels[id(m)]} | – | – | missing | – | NO CANDIDATE | |")
    if unpaired:
        lines += ["", "Judged by the tolerance alone (their cases could not be paired):", ""]
        lines += [f"- {label}: {why}" for label, why in unpaired]
    lines.append("")
    lines.append(
        "Rates in %, other metrics in the unit beside their name; higher is better unless marked. "
        + gate_method(level, n_resamples)
    )
    return "\n".join(lines) + "\n"


# Headers that say what a number is where its key alone would mislead: CounterFact's `ngram_entropy` is ROME's
# n-gram entropy but of greedy 50-token generations (ROME samples 100 tokens top-k), not comparable with published
# fluency numbers. (Kept here, not in kebench.metrics.spec: the evaluation code keys the pre-edit cache.)
COLUMN_NAMES = {"ngram_entropy": "entropy (greedy 50)"}


def _metric_label(metric: str) -> str:
    """The metric's name, with its unit unless a rate and a mark if lower is better."""
    spec = metric_spec(metric)
    return metric + (f" ({spec.unit})" if spec.unit != PERCENT else "") + ("" if spec.higher_is_better else " ↓")


# ----------------------------------------------------------------------------- compare tables


def metric_cell(metric: str, x: object) -> str:
    """A metric for a table: rates in %, the others (fluency, in bits) as they are."""
    return metric_spec(metric).cell(x)


def edited_cell(metric: str, post: object, pre: object = None, plusminus: float | None = None) -> str:
    """"edited (unedited)", and for a rate the lift over the unedited model in points: "95.0 (40.0) +55.0";
    with `plusminus` (a half-width or a spread, in the metric's unit) after the edited value: "95.0 ±1.3 (40.0) +55.0"."""
    spec = metric_spec(metric)
    edited = spec.cell(post) + (f" ±{spec.cell(plusminus)}" if isinstance(plusminus, (int, float)) else "")
    if not isinstance(pre, (int, float)):
        return edited
    cell = f"{edited} ({spec.cell(pre)})"
    if spec.unit == PERCENT and isinstance(post, (int, float)):
        cell += " " + spec.cell(post - pre, signed=True)
    return cell


# A headline metric that the unedited model cannot score on the original facts says nothing about
# an editor on that model: (metric, the pre-edit metric on the original facts, the least it must reach).
NOT_MEASURABLE = {"multihop_accuracy": ("multihop_accuracy_original", 0.10)}
NOT_MEASURABLE_MARK = "n/m"
NOT_MEASURABLE_NOTE = (
    f"{NOT_MEASURABLE_MARK}: not measurable on this model: unedited, it answers fewer than 10% of the multi-hop "
    "questions correctly about the original facts (`multihop_accuracy_original`), so no editor can be compared on them."
)


def measurable(metric: str, pre: dict[str, float]) -> bool:
    """False where `NOT_MEASURABLE` gates `metric` and the unedited model's `pre` metrics fall below the gate."""
    gate = NOT_MEASURABLE.get(metric)
    return gate is None or not isinstance(pre.get(gate[0]), (int, float)) or pre[gate[0]] >= gate[1]


def comparison_tables(summaries: list[ResultSummary], *, ci: bool = False) -> list[tuple[str, list[str], list[list[str]]]]:
    """(suite, header, rows) per suite (a filtered run's under e.g. "counterfact:known"); cells are
    `edited_cell`, then cost columns. Runs that differ only in seed are one row (`seed_groups`): the mean
    over the seeds ± their standard deviation, with a "seeds" column in that suite's table; with `ci`, a
    one-run row shows ± half the width of the run's bootstrap interval over cases (`ResultSummary.intervals`)."""
    from itertools import groupby

    ordered = sorted(summaries, key=lambda s: (s.suite_label, s.scale, s.mode, s.editor, s.overrides))
    tables = []
    for dataset, group in groupby(ordered, key=lambda s: s.suite_label):
        runs = list(group)
        cols = headline_metrics(runs)
        groups = seed_groups(runs)
        pooled = any(len(g) > 1 for g in groups)
        header = ["editor", "n", "mode", *(["seeds"] if pooled else []), *(COLUMN_NAMES.get(c) or c.removesuffix("_success") for c in cols),
                  "s/edit", "total s", "peak GB"]
        rows = []
        for g in groups:
            s = g[0]
            pre, post = _mean_over(g, "pre"), _mean_over(g, "post")
            spread = _seed_spread(g) if len(g) > 1 else _half_widths(s) if ci else {}
            cells = ["–" if c not in post else edited_cell(c, post[c], pre.get(c), spread.get(c)) for c in cols]
            cells = [x if x == "–" or measurable(c, pre) else NOT_MEASURABLE_MARK for c, x in zip(cols, cells)]
            peaks = [r.peak_memory_mb for r in g if r.peak_memory_mb]
            peak = f"{max(peaks) / 1024:.1f}" if peaks else "–"
            per_edit = f"{statistics.fmean(r.seconds_per_edit for r in g):.2f}" + (CACHED_MARK if any(r.from_fit_cache for r in g) else "")
            total = f"{statistics.fmean(r.total_seconds for r in g):.0f}"
            seeds = [",".join(str(r.seed) for r in g)] if pooled else []
            rows.append([s.variant, str(s.scale), s.mode, *seeds, *cells, per_edit, total, peak])
        tables.append((dataset, header, rows))
    return tables


def seed_groups(summaries: list[ResultSummary]) -> list[list[ResultSummary]]:
    """Runs that differ only in their seed (same configuration, scale, mode, filter and device), together
    and in seed order, in the order their first run comes; a seed met twice (the same run given twice)
    starts a group of its own."""
    groups: dict[tuple, list[list[ResultSummary]]] = {}
    for s in summaries:
        slots = groups.setdefault((s.key, s.device), [])
        for g in slots:
            if all(r.seed != s.seed for r in g):
                g.append(s)
                break
        else:
            slots.append([s])
    return [sorted(g, key=lambda r: r.seed) for slots in groups.values() for g in slots]


def _numbers(runs: list[ResultSummary], side: str) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for r in runs:
        for k, v in getattr(r, side).items():
            if isinstance(v, (int, float)):
                values.setdefault(k, []).append(float(v))
    return values


def _mean_over(runs: list[ResultSummary], side: str) -> dict[str, float]:
    """Each metric's mean over the runs that report it (a one-run group: the run's own numbers)."""
    if len(runs) == 1:
        return getattr(runs[0], side)
    return {k: statistics.fmean(v) for k, v in _numbers(runs, side).items()}


def _seed_spread(runs: list[ResultSummary]) -> dict[str, float]:
    """Each post-edit metric's sample standard deviation across the runs (seeds) that report it."""
    return {k: statistics.stdev(v) for k, v in _numbers(runs, "post").items() if len(v) > 1}


def _half_widths(run: ResultSummary) -> dict[str, float]:
    """Half the width of each post-edit metric's bootstrap interval (none where the run has none)."""
    post = (run.intervals or {}).get("post") or {}
    return {k: (hi - lo) / 2 for k, (lo, hi) in post.items()}


def plusminus_note(tables: list[tuple[str, list[str], list[list[str]]]], level: float | None) -> str | None:
    """What ± means in `tables` (None where no cell has one): with `level` (compare --ci), the bootstrap half-width
    in one-run rows; in rows that pool seeds, the spread across seeds."""
    pooled = any("seeds" in header for _, header, _ in tables)
    parts = []
    if level is not None:
        parts.append(f"in a row of one run, half the width of the {level:.0%} percentile bootstrap interval over its cases")
    if pooled:
        parts.append("in a row with several seeds (seeds column), the value is their mean and ± the standard deviation "
                     "across those seeds")
    return ("±: " + "; ".join(parts) + ".") if parts else None


def has_cached_fits(rows: list[list[str]]) -> bool:
    """Whether a comparison table has a run whose s/edit (third cell from the end) carries the cache mark."""
    return any(r[-3].endswith(CACHED_MARK) for r in rows)


def markdown_tables(
    tables: list[tuple[str, list[str], list[list[str]]]], images: list[Path] = (), rel_to: Path | None = None,
    notes: list[str] = (),
) -> str:
    """The tables as markdown, then `notes` (e.g. `plusminus_note`) and the notes their marks need, then the plots."""
    md: list[str] = []
    for dataset, header, rows in tables:
        md += [f"### {dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in rows]
        md.append("")
    for note in notes:
        md += [note, ""]
    if any(has_cached_fits(rows) for _, _, rows in tables):
        md += [CACHED_NOTE, ""]
    if any(NOT_MEASURABLE_MARK in r for _, _, rows in tables for r in rows):
        md += [NOT_MEASURABLE_NOTE, ""]
    for img in images:
        ref = img.relative_to(rel_to) if rel_to is not None else img
        md += [f"![{img.stem}]({ref.as_posix()})", ""]
    return "\n".join(md)


def html_report(tables: list[tuple[str, list[str], list[list[str]]]], images: list[Path] = (), notes: list[str] = ()) -> str:
    """One self-contained page: the tables (`notes` under the introduction), and the plots embedded as base64 PNG."""
    import base64
    import html

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>kebench comparison</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
        "<h1>kebench comparison</h1><p>Cells: edited (unedited) and, for rates, the lift over the unedited model; "
        "rates in % (lift in points); entropy (greedy 50): ROME's n-gram entropy of greedy 50-token generations, in bits.</p>",
        *(f"<p>{html.escape(note)}</p>" for note in notes),
    ]
    for dataset, header, rows in tables:
        parts.append(f"<h2>{html.escape(dataset)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    if any(has_cached_fits(rows) for _, _, rows in tables):
        parts.append(f"<p>{html.escape(CACHED_NOTE)}</p>")
    if any(NOT_MEASURABLE_MARK in r for _, _, rows in tables for r in rows):
        parts.append(f"<p>{html.escape(NOT_MEASURABLE_NOTE)}</p>")
    for img in images:
        data = base64.b64encode(Path(img).read_bytes()).decode()
        parts.append(f"<h3>{html.escape(Path(img).stem)}</h3><img alt='{html.escape(Path(img).stem)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
