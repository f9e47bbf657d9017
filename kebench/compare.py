"""Reading results files and lining them up: the `compare` table and the `report` regression gate."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from kebench.config import parse_override
from kebench.errors import ConfigError
from kebench.metrics.spec import PERCENT, metric_spec


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
    overrides: tuple[str, ...] = ()  # --hparam overrides and drift from today's defaults (separate rows and gate keys)
    peak_memory_mb: float | None = None
    from_fit_cache: bool = False  # part of the fitting was read from kebench.fit_cache: s/edit is not a fresh fit's
    device: str = "cpu"  # "cpu", or the GPU's name: times (and peak memory, then the GPU's) are that device's
    case_filter: str | None = None  # `run --filter`: the run's cases are a subset (its own table and gate key)

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
        """The editor, its overrides and a GPU if it ran on one, e.g. "meg [use_familiarity=false]",
        "memit @ NVIDIA H200"."""
        return (
            self.editor
            + (f" [{', '.join(self.overrides)}]" if self.overrides else "")
            + (f" @ {self.device}" if self.device != "cpu" else "")
        )

    @property
    def label(self) -> str:
        return f"{self.variant}/{self.suite_label}/n{self.scale}/{self.mode}"


# Hyperparameters that set only how many edits are fitted per forward/backward: every edit keeps its
# own optimiser state (kebench.optim.RowAdam), so they change rounding, not results. A run with one
# of them overridden is the same row and gate key as the run without.
THROUGHPUT_HPARAMS = frozenset({"v_edits_per_batch", "fit_batch_size"})
# Switches for caching and checkpointing: they decide what is recomputed, never what comes out.
OPERATIONAL_HPARAMS = frozenset({"v_cache", "update_checkpoint", "fit_cache"})


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def identifying_overrides(overrides: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The --hparam overrides that make a run a different configuration (see THROUGHPUT_HPARAMS)."""
    return tuple(o for o in overrides or () if _override_key(o) not in THROUGHPUT_HPARAMS)


def drift_from_defaults(recorded: dict | None, defaults: dict, overridden: tuple[str, ...]) -> tuple[str, ...]:
    """`key=value` for each recorded hyperparameter that today's `defaults` do not match, outside the
    run's own overrides. A default changed since a run was made then shows as a configuration of its
    own instead of passing for today's; keys a run predates are left out (it recorded no value)."""
    if not recorded:
        return ()
    ignored = {_override_key(o) for o in overridden} | THROUGHPUT_HPARAMS | OPERATIONAL_HPARAMS
    return tuple(
        f"{key}={_format_value(recorded[key])}"
        for key, default in defaults.items()
        if key in recorded and key not in ignored and recorded[key] != default
    )


@lru_cache(maxsize=None)
def _current_defaults(editor: str, model: str) -> dict:
    """Today's default hyperparameters as a results file records them (tuples become lists); empty for
    an editor or config this install lacks, whose runs keep their recorded overrides only. Shared
    between calls: read only."""
    from kebench.editor import EDITORS

    try:
        hparams = EDITORS.get(editor).default_hparams(model)
    except Exception:
        return {}
    return json.loads(json.dumps(dataclasses.asdict(hparams)))


def _format_value(value: object) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def load_result(path: Path) -> ResultSummary:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"results file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not a kebench results file (JSONDecodeError: {exc})") from None
    return summarize(path, data)


def summarize(path: Path, data: dict) -> ResultSummary:
    """The summary of a results file's parsed JSON `data` (for callers that also read other fields)."""
    try:
        run = data["run"]
        mode = run["mode"] + (f"-b{run['batch_size']}" if run["mode"] == "sequential" else "")
        return ResultSummary(
            path=path,
            editor=data["editor"],
            dataset=run["dataset"],
            scale=int(run["n_cases"]),
            mode=mode,
            model=run.get("model") or "default",
            seed=int(run["seed"]),
            pre=data["metrics"]["pre"],
            post=_with_paired(run["dataset"], data["metrics"]["post"], data.get("cases")),
            seconds_per_edit=float(data.get("seconds_per_edit", 0.0)),
            total_seconds=float(data["timings_s"].get("total", 0.0)),
            overrides=_identity(data["editor"], run, data.get("hparams")),
            peak_memory_mb=_peak_memory_mb(data.get("memory") or {}),
            from_fit_cache=used_fit_cache(data),
            device=_device(data.get("provenance") or {}),
            case_filter=run.get("case_filter"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a kebench results file ({type(exc).__name__}: {exc})") from None


def _identity(editor: str, run: dict, recorded: dict | None) -> tuple[str, ...]:
    """What sets a run apart from today's default configuration: its overrides, less any that today's
    default now equals, and its drift from today's defaults."""
    model = run.get("model") or "default"
    overrides = identifying_overrides(run.get("hparam_overrides"))
    defaults = _current_defaults(editor, model)
    differing = tuple(o for o in overrides if not _equals_default(o, defaults))
    return differing + drift_from_defaults(recorded, defaults, overrides)


def _equals_default(override: str, defaults: dict) -> bool:
    try:
        key, value = parse_override(override)
    except ConfigError:
        return False
    return key in defaults and json.loads(json.dumps(value)) == defaults[key]


def _device(provenance: dict) -> str:
    hardware = provenance.get("hardware") or {}
    return hardware.get("gpu") or ("cpu" if str(hardware.get("device", "cpu")).startswith("cpu") else str(hardware["device"]))


def _peak_memory_mb(memory: dict) -> float | None:
    """A GPU run's peak is its GPU memory (what limits it there); a CPU run's, its resident set."""
    return memory.get("peak_cuda_mb") or memory.get("peak_rss_mb")


def used_fit_cache(data: dict) -> bool:
    """Whether a results file's editing read fitted values, neurons, a trained generator or finished
    update steps from the fit cache (its s/edit then leaves that work out)."""
    return any(
        stats.get("v_cached_groups") or stats.get("fit_cached_chunks") or stats.get("diffusion_from_cache")
        or stats.get("update_resumed_steps")
        for stats in ((step.get("stats") or {}) for step in data.get("editor_stats") or [])
    )


CACHED_MARK = "†"
CACHED_NOTE = (
    f"{CACHED_MARK} part of the fitting (or a resumed update's finished layers) was read from the fit cache (kebench.fit_cache), so s/edit is less than "
    "a fresh fit's; `editor_stats` in the results file records what the cached part took when it was fitted."
)


def _with_paired(dataset: str, post: dict[str, float], cases: list[dict] | None) -> dict[str, float]:
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


def headline_metrics(summaries: list[ResultSummary]) -> list[str]:
    """Metric columns to show: each suite's headline metrics, in a stable order."""
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
    return cols


@dataclass(frozen=True)
class Regression:
    label: str
    metric: str
    baseline: float
    candidate: float

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline


def find_regressions(
    baseline: list[ResultSummary], candidate: list[ResultSummary], tolerance: float
) -> tuple[list[tuple[ResultSummary, ResultSummary]], list[Regression], list[ResultSummary]]:
    """Pair runs by key; a regression is a headline metric that got worse by more than `tolerance`.

    Returns (pairs, regressions, baselines with no candidate). Worse is a drop, or a rise for a
    lower-is-better metric (kebench.metrics.spec); `tolerance` is absolute, in each metric's own
    unit (a fraction for rates, bits for n-gram entropy).
    """
    from kebench.suites import get_suite

    cand = {c.key: c for c in candidate}
    pairs, regressions, missing = [], [], []
    for b in baseline:
        c = cand.get(b.key)
        if c is None:
            missing.append(b)
            continue
        pairs.append((b, c))
        for metric in get_suite(b.dataset).headline:
            if metric not in b.post:
                continue
            if metric not in c.post:
                regressions.append(Regression(b.label, metric, float(b.post[metric]), float("nan")))
                continue
            if metric_spec(metric).worsening(float(b.post[metric]), float(c.post[metric])) > tolerance:
                regressions.append(Regression(b.label, metric, float(b.post[metric]), float(c.post[metric])))
    return pairs, regressions, missing


def markdown_report(
    pairs: list[tuple[ResultSummary, ResultSummary]],
    regressions: list[Regression],
    missing: list[ResultSummary],
    tolerance: float,
) -> str:
    from kebench.suites import get_suite

    lines = ["# kebench regression report", ""]
    verdict = "FAIL" if regressions or missing else "PASS"
    lines.append(
        f"**{verdict}**: {len(pairs)} run(s) compared, {len(regressions)} regression(s) beyond "
        f"tolerance {tolerance:.3f}, {len(missing)} reference run(s) without a candidate."
    )
    lines.append("")
    lines.append("| run | metric | reference | candidate | delta | |")
    lines.append("|---|---|---:|---:|---:|---|")
    bad = {(r.label, r.metric) for r in regressions}
    for b, c in pairs:
        for metric in get_suite(b.dataset).headline:
            if metric not in b.post:
                continue
            spec, cv = metric_spec(metric), c.post.get(metric)
            cs = "missing" if cv is None else spec.cell(cv)
            ds = "" if cv is None else spec.cell(cv - b.post[metric], signed=True)
            flag = "REGRESSION" if (b.label, metric) in bad else "ok"
            lines.append(f"| {b.label} | {_metric_label(metric)} | {spec.cell(b.post[metric])} | {cs} | {ds} | {flag} |")
    for m in missing:
        lines.append(f"| {m.label} | – | – | missing | – | NO CANDIDATE |")
    lines.append("")
    lines.append(
        "Rates in %, other metrics in the unit beside their name; higher is better unless marked. A regression "
        "is a change for the worse larger than the tolerance (in the metric's own unit; a fraction for rates)."
    )
    return "\n".join(lines) + "\n"


def _metric_label(metric: str) -> str:
    """The metric's name, with its unit unless a rate and a mark if lower is better."""
    spec = metric_spec(metric)
    return metric + (f" ({spec.unit})" if spec.unit != PERCENT else "") + ("" if spec.higher_is_better else " ↓")


# ----------------------------------------------------------------------------- compare tables


def metric_cell(metric: str, x: object) -> str:
    """A metric for a table: rates in %, the others (fluency, in bits) as they are."""
    return metric_spec(metric).cell(x)


def edited_cell(metric: str, post: object, pre: object = None) -> str:
    """"edited (unedited)", and for a rate the lift over the unedited model in points: "95.0 (40.0) +55.0"."""
    spec = metric_spec(metric)
    if not isinstance(pre, (int, float)):
        return spec.cell(post)
    cell = f"{spec.cell(post)} ({spec.cell(pre)})"
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


def comparison_tables(summaries: list[ResultSummary]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(suite, header, rows) per suite (a filtered run's under e.g. "counterfact:known"); cells are
    `edited_cell`, then cost columns."""
    from itertools import groupby

    ordered = sorted(summaries, key=lambda s: (s.suite_label, s.scale, s.mode, s.editor, s.overrides))
    tables = []
    for dataset, group in groupby(ordered, key=lambda s: s.suite_label):
        runs = list(group)
        cols = headline_metrics(runs)
        header = ["editor", "n", "mode", *(c.removesuffix("_success") for c in cols), "s/edit", "total s", "peak GB"]
        rows = []
        for s in runs:
            cells = ["–" if c not in s.post else edited_cell(c, s.post[c], s.pre.get(c)) for c in cols]
            cells = [x if x == "–" or measurable(c, s.pre) else NOT_MEASURABLE_MARK for c, x in zip(cols, cells)]
            peak = f"{s.peak_memory_mb / 1024:.1f}" if s.peak_memory_mb else "–"
            per_edit = f"{s.seconds_per_edit:.2f}" + (CACHED_MARK if s.from_fit_cache else "")
            rows.append([s.variant, str(s.scale), s.mode, *cells, per_edit, f"{s.total_seconds:.0f}", peak])
        tables.append((dataset, header, rows))
    return tables


def has_cached_fits(rows: list[list[str]]) -> bool:
    """Whether a comparison table has a run whose s/edit (third cell from the end) carries the cache mark."""
    return any(r[-3].endswith(CACHED_MARK) for r in rows)


def markdown_tables(tables: list[tuple[str, list[str], list[list[str]]]], images: list[Path] = (), rel_to: Path | None = None) -> str:
    md: list[str] = []
    for dataset, header, rows in tables:
        md += [f"### {dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in rows]
        md.append("")
    if any(has_cached_fits(rows) for _, _, rows in tables):
        md += [CACHED_NOTE, ""]
    if any(NOT_MEASURABLE_MARK in r for _, _, rows in tables for r in rows):
        md += [NOT_MEASURABLE_NOTE, ""]
    for img in images:
        ref = img.relative_to(rel_to) if rel_to is not None else img
        md += [f"![{img.stem}]({ref.as_posix()})", ""]
    return "\n".join(md)


def html_report(tables: list[tuple[str, list[str], list[list[str]]]], images: list[Path] = ()) -> str:
    """One self-contained page: the tables, and the plots embedded as base64 PNG."""
    import base64
    import html

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>kebench comparison</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
        "<h1>kebench comparison</h1><p>Cells: edited (unedited) and, for rates, the lift over the unedited model; "
        "rates in % (lift in points), ngram_entropy in bits.</p>",
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
