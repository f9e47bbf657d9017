"""Scaling curves from results files: each headline metric vs edit count, and time vs edit count."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from kebench.compare import ResultSummary


def plot_scaling(summaries: list[ResultSummary], out_dir: Path) -> list[Path]:
    """One PNG per suite: a panel per headline metric, seconds per edit and peak memory; a line per editor variant and mode."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    from kebench.suites import get_suite

    out_dir.mkdir(parents=True, exist_ok=True)
    by_suite: dict[str, list[ResultSummary]] = defaultdict(list)
    for s in summaries:
        by_suite[s.dataset].append(s)
    written: list[Path] = []
    for dataset, runs in sorted(by_suite.items()):
        metrics = [m for m in get_suite(dataset).headline if any(m in r.post for r in runs)]
        panels = [*metrics, "seconds_per_edit", "peak_memory_gb"]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
        lines: dict[tuple[str, str], list[ResultSummary]] = defaultdict(list)
        for r in runs:
            lines[(r.variant, r.mode)].append(r)
        for ax, metric in zip(axes[0], panels):
            for (editor, mode), pts in sorted(lines.items()):
                pts = sorted(pts, key=lambda r: r.scale)
                xs = [r.scale for r in pts]
                if metric == "seconds_per_edit":
                    ys = [r.seconds_per_edit for r in pts]
                elif metric == "peak_memory_gb":
                    ys = [r.peak_memory_mb / 1024 if r.peak_memory_mb else float("nan") for r in pts]
                else:
                    ys = [100 * r.post[metric] if metric in r.post else float("nan") for r in pts]
                ax.plot(xs, ys, marker="o", label=f"{editor} ({mode})")
            ax.set_xscale("log")
            ax.set_xlabel("edits")
            ax.set_title(metric if metric in ("seconds_per_edit", "peak_memory_gb") else f"{metric} (%)", fontsize=9)
            ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        ncol = min(4, max(1, len(labels)))
        legend_rows = -(-len(labels) // ncol)
        fig.set_size_inches(3.2 * len(panels), 3.2 + 0.22 * legend_rows)
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
        fig.suptitle(f"{dataset}: scaling with the number of edits", fontsize=10)
        fig.tight_layout(rect=(0, 0.22 * legend_rows / (3.2 + 0.22 * legend_rows) + 0.02, 1, 1))
        path = out_dir / f"scaling_{dataset}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
