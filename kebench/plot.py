"""Scaling curves from results files: each headline metric vs edit count, and time and memory vs edit count.

Per suite, one figure of each editor's default configuration (a colour per editor, a line style per
mode and device) and, when there are any, one of the ablations: runs whose identity has overrides
(kebench.results.RunIdentity: settings apart from the editor's defaults, e.g. `meg [familiarity=similarity]`),
drawn beside their editor's default runs (grey, for reference)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from kebench.compare import ResultSummary
from kebench.metrics.spec import metric_spec
from kebench.results import Retention

# a line style and a marker per mode/device (a run at one scale is a marker only)
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
REFERENCE_COLOR = "0.45"
COST_PANELS = ("seconds_per_edit", "peak_memory_gb")


@dataclass(frozen=True)
class Series:
    """One line of a scaling figure: the runs of one configuration, mode and device, by edit count."""

    label: str
    editor: str
    variant: str  # the editor with its overrides, e.g. "meg [familiarity=similarity]" (no device)
    mode: str  # the mode, with the GPU when there was one, e.g. "batch", "sequential-b100 @ NVIDIA H200"
    figure: str  # "default" or "ablations"
    color: object
    linestyle: object
    marker: str
    points: tuple[ResultSummary, ...]
    reference: bool = False  # an editor's default runs, drawn in the ablations figure to compare with


def _mode(r: ResultSummary) -> str:
    return r.mode + (f" @ {r.device}" if r.device != "cpu" else "")


def _config(r: ResultSummary) -> str:
    return r.editor + (f" [{', '.join(r.overrides)}]" if r.overrides else "")


def _palette(name: str, n: int) -> list:
    import matplotlib

    colors = [c for c in matplotlib.colormaps[name].colors if len(set(c)) > 1]  # no greys: grey marks references
    if name == "tab20":  # the ten strong hues first, then their light partners: neighbours stay apart
        colors = colors[0::2] + colors[1::2]
    return colors if n <= len(colors) else colors * (n // len(colors) + 1)


def style_maps(summaries: list[ResultSummary]) -> tuple[dict[str, object], dict[str, tuple[object, str]]]:
    """(colour per editor, (line style, marker) per mode/device), fixed over all suites so that an editor
    or a mode looks the same in every figure. CPU batch runs are solid lines with round markers."""
    editors = sorted({s.editor for s in summaries})
    colors = dict(zip(editors, _palette("tab10" if len(editors) <= 9 else "tab20", len(editors))))
    modes = sorted({_mode(s) for s in summaries}, key=lambda m: (" @ " in m, m != "batch", m))
    styles = {m: (LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)]) for i, m in enumerate(modes)}
    return colors, styles


def scaling_series(
    runs: list[ResultSummary],
    colors: dict[str, object] | None = None,
    styles: dict[str, tuple[object, str]] | None = None,
) -> list[Series]:
    """The lines of one suite's figures. Default runs: figure "default", the editor's colour. Runs with
    overrides: figure "ablations", a colour per configuration (18 before they repeat), plus their editors'
    default runs again as grey reference lines. Line style and marker: the mode/device, in both figures."""
    if colors is None or styles is None:
        colors, styles = style_maps(runs)
    groups: dict[tuple[str, str], list[ResultSummary]] = defaultdict(list)
    for r in runs:
        groups[(_config(r), _mode(r))].append(r)
    by_config = {key: tuple(sorted(pts, key=lambda r: r.scale)) for key, pts in groups.items()}
    ablations = sorted({config for (config, _), pts in by_config.items() if pts[0].overrides})
    ablation_colors = dict(zip(ablations, _palette("tab20", len(ablations))))
    ablated_editors = {pts[0].editor for (config, _), pts in by_config.items() if config in ablation_colors}
    series: list[Series] = []
    for (config, mode), pts in sorted(by_config.items()):
        editor = pts[0].editor
        linestyle, marker = styles[mode]
        if config in ablation_colors:
            series.append(Series(f"{config} ({mode})", editor, config, mode, "ablations", ablation_colors[config],
                                 linestyle, marker, pts))
            continue
        series.append(Series(f"{config} ({mode})", editor, config, mode, "default", colors[editor], linestyle, marker, pts))
        if editor in ablated_editors:
            series.append(Series(f"{config}: default ({mode})", editor, config, mode, "ablations", REFERENCE_COLOR,
                                 linestyle, marker, pts, reference=True))
    return series


def _values(pts: tuple[ResultSummary, ...], panel: str) -> list[float]:
    if panel == "seconds_per_edit":
        return [r.seconds_per_edit for r in pts]
    if panel == "peak_memory_gb":
        return [r.peak_memory_mb / 1024 if r.peak_memory_mb else float("nan") for r in pts]
    spec = metric_spec(panel)
    return [spec.shown(r.post[panel]) if panel in r.post else float("nan") for r in pts]


def _metric_title(metric: str) -> str:
    """E.g. "efficacy_success (%)", "ngram_entropy (bits)", with "lower is better" where it is."""
    spec = metric_spec(metric)
    return f"{metric} ({spec.unit}{'' if spec.higher_is_better else ', lower is better'})"


def _draw(dataset: str, title: str, panels: list[str], series: list[Series], path: Path) -> Path:
    """A grid of panels (three across) sharing one legend, in the grid's empty corner when it has one."""
    import matplotlib.pyplot as plt

    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = plt.figure(figsize=(4.6 * ncols, 3.4 * nrows))
    grid = fig.add_gridspec(nrows, ncols)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        for s in series:
            ax.plot(
                [r.scale for r in s.points], _values(s.points, panel), label=s.label,
                color=s.color, linestyle=s.linestyle, marker=s.marker, markersize=6 if s.reference else 5,
                linewidth=3 if s.reference else 1.6, alpha=0.6 if s.reference else 0.95, zorder=1 if s.reference else 2,
            )
        ax.set_xscale("log")
        ax.set_xlabel("edits", fontsize=9)
        name = {"seconds_per_edit": "seconds per edit", "peak_memory_gb": "peak memory (GB)"}.get(panel) or _metric_title(panel)
        ax.set_title(name, fontsize=11)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    free = nrows * ncols - len(panels)
    if free:
        slot = fig.add_subplot(grid[nrows - 1, ncols - free:])
        slot.axis("off")
        slot.legend(handles, labels, loc="center left" if free > 1 else "upper left", fontsize=8.5, frameon=False,
                    ncol=1 if len(labels) <= 16 else 2)
    else:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=8.5, frameon=False,
                   ncol=min(3, max(1, len(labels))))
    fig.suptitle(f"{dataset}: {title}", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_scaling(summaries: list[ResultSummary], out_dir: Path) -> list[Path]:
    """Per suite, `scaling_<suite>.png` (each editor's default configuration) and, when the suite has
    ablations, `scaling_<suite>_ablations.png`: a panel per headline metric, seconds per edit and peak
    memory, against the number of edits."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display

    from kebench.suites import get_suite

    out_dir.mkdir(parents=True, exist_ok=True)
    colors, styles = style_maps(summaries)
    by_suite: dict[str, list[ResultSummary]] = defaultdict(list)
    for s in summaries:
        by_suite[s.suite_label].append(s)  # a filtered run (counterfact:known) is a suite of its own
    written: list[Path] = []
    for label, runs in sorted(by_suite.items()):
        dataset = label.replace(":", "-")
        metrics = [m for m in get_suite(runs[0].dataset).headline if any(m in r.post for r in runs)]
        panels = [*metrics, *COST_PANELS]
        series = scaling_series(runs, colors, styles)
        for figure, title, name in (
            ("default", "scaling with the number of edits (default settings)", f"scaling_{dataset}.png"),
            ("ablations", "ablations and other settings (grey: the editor's defaults)", f"scaling_{dataset}_ablations.png"),
        ):
            chosen = [s for s in series if s.figure == figure]
            if chosen:
                written.append(_draw(dataset, title, panels, chosen, out_dir / name))
    return written


RETENTION_GENERAL = ("perplexity", "retained_knowledge")


def plot_retention(summaries: list[ResultSummary], out_dir: Path) -> list[Path]:
    """Per suite, `retention_<suite>.png` for sequential runs made with --eval-at: the headline score of
    every case edited so far against the cases edited (solid), each step's cases right after their own step
    (a dotted level: `immediate`), and general ability (perplexity, known facts retained) at the same points.
    Runs without a retention block are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kebench.suites import get_suite

    out_dir.mkdir(parents=True, exist_ok=True)
    by_suite: dict[str, list[tuple[str, Retention]]] = defaultdict(list)
    for s in summaries:
        if s.retention is not None:
            by_suite[s.dataset].append((f"{s.variant} {s.mode}", s.retention))
    written: list[Path] = []
    for dataset, chosen in sorted(by_suite.items()):
        headline = "score" if "score" in get_suite(dataset).headline else get_suite(dataset).headline[0]
        panels = [headline, *(g for g in RETENTION_GENERAL if any(p.general for _, r in chosen for p in r.points))]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
        colors = _palette("tab10", len(chosen))
        for (label, retention), color in zip(chosen, colors):
            points = retention.points
            xs = [p.cases for p in points]
            for ax, panel in zip(axes[0], panels):
                if panel == headline:
                    ys = [metric_spec(panel).shown(p.metrics[panel]) for p in points]
                    ax.plot(xs, ys, color=color, marker="o", label=f"{label}: all cases so far")
                    immediate = (retention.immediate or {}).get(panel)
                    if immediate is not None:
                        ax.axhline(metric_spec(panel).shown(immediate), color=color, linestyle=":",
                                   label=f"{label}: each step's cases right after it")
                else:
                    ys = [metric_spec(panel).shown(p.general[panel]) if p.general and p.general.get(panel) is not None
                          else float("nan") for p in points]
                    ax.plot(xs, ys, color=color, marker="o", label=label)
        for ax, panel in zip(axes[0], panels):
            ax.set_xlabel("cases edited", fontsize=9)
            unit = metric_spec(panel).unit
            ax.set_title(f"{panel.replace('_', ' ')} ({unit})", fontsize=11)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7.5, frameon=False)
        fig.suptitle(f"{dataset}: retention over a sequence of edits", fontsize=13)
        fig.tight_layout()
        path = out_dir / f"retention_{dataset.replace(':', '-')}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
