"""How each editor's costs grow with the number of edits, from the published results files.

Every results file already records its phase timings and peak memory (measured in that run);
this collects them per editor, suite and mode, at every scale present (100 / 1,000 / 10,000):

- fitting throughput: edits per second of the edit phase (requests / edit seconds);
- evaluation throughput: cases and prompts per second of the post-edit evaluation;
- peak resident memory;
- growth: the exponent k of edit time ∝ n^k between the smallest and largest scale
  (k = 1: linear, as batched fitting should be; k > 1: something grows with the batch).

    python benchmarks/scaling.py results/smollm2-135m --out results/benchmarks/scaling.json

Times come from runs that may have shared the machine; compare ratios within one file.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from kebench.compare import expand_paths, summarize
from kebench.io import atomic_write_json
from kebench.suites import get_suite


def prompts_per_case(dataset: str, scale: int, seed: int) -> float:
    """Mean probes evaluated per case (edit prompts, paraphrases, neighbours, portability/hops)."""
    suite = get_suite(dataset)
    cases = suite.sample(suite.load(None, None).cases, scale, seed)
    total = sum(len(c.requests) + len(c.paraphrases) + len(c.neighbourhood) + len(c.portability) for c in cases)
    return total / len(cases)


def collect(paths: list[Path]) -> list[dict]:
    rows = []
    for path in expand_paths(paths):
        data = json.loads(path.read_text())
        summary = summarize(path, data)  # editor label (overrides, GPU), mode and dataset as compare shows them
        run, t = data["run"], data["timings_s"]
        n_req, n_cases = run["n_requests"], run["n_cases"]
        ppc = prompts_per_case(run["dataset"], n_cases, run["seed"]) if not run.get("data_file") else float("nan")
        rows.append({
            "file": str(path),
            "editor": summary.variant,
            "dataset": summary.dataset,
            "mode": summary.mode,
            "n_cases": n_cases,
            "n_requests": n_req,
            "edit_seconds": round(t.get("edit", 0.0), 1),
            "fitting_edits_per_second": round(n_req / t["edit"], 4) if t.get("edit") else None,
            "eval_seconds": round(t.get("post", 0.0), 1),
            "eval_cases_per_second": round(n_cases / t["post"], 3) if t.get("post") else None,
            "eval_prompts_per_second": round(ppc * n_cases / t["post"], 2) if t.get("post") else None,
            "peak_memory_gb": round(data.get("memory", {}).get("peak_rss_mb", float("nan")) / 1024, 2),
            "total_seconds": round(t.get("total", 0.0), 1),
            "from_fit_cache": summary.from_fit_cache,  # edit time leaves out cached fits
        })
    return rows


def growth(rows: list[dict]) -> list[dict]:
    """Edit-time exponent between the smallest and largest scale of each (editor, dataset, mode),
    from runs that fitted everything themselves (a run that read fits from the cache did not)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["editor"], r["dataset"], r["mode"])].append(r)
    out = []
    for (editor, dataset, mode), rs in sorted(groups.items()):
        rs = sorted((r for r in rs if r["edit_seconds"] > 0 and not r["from_fit_cache"]), key=lambda r: r["n_requests"])
        if len(rs) < 2 or rs[0]["n_requests"] == rs[-1]["n_requests"]:
            continue
        lo, hi = rs[0], rs[-1]
        k = math.log(hi["edit_seconds"] / lo["edit_seconds"]) / math.log(hi["n_requests"] / lo["n_requests"])
        out.append({"editor": editor, "dataset": dataset, "mode": mode, "from_n": lo["n_requests"],
                    "to_n": hi["n_requests"], "edit_time_exponent": round(k, 2),
                    "memory_ratio": round(hi["peak_memory_gb"] / lo["peak_memory_gb"], 2)})
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("fitting_edits_per_second", "fitting: edits / s"), ("eval_prompts_per_second", "evaluation: prompts / s"),
              ("peak_memory_gb", "peak memory (GB)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    lines: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["editor"] != "none":
            lines[(r["editor"], r["dataset"], r["mode"])].append(r)
    for ax, (key, title) in zip(axes, panels):
        for (editor, dataset, mode), rs in sorted(lines.items()):
            rs = sorted(rs, key=lambda r: r["n_cases"])
            ys = [r[key] if r[key] is not None else float("nan") for r in rs]
            ax.plot([r["n_cases"] for r in rs], ys, marker="o", label=f"{editor} {dataset} {mode}")
        ax.set_xscale("log")
        ax.set_xlabel("edits (cases)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path, help="results files or folders")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/scaling.json"))
    args = ap.parse_args()
    rows = collect(args.results)
    result = {"runs": rows, "growth": growth(rows)}
    atomic_write_json(args.out, result)
    plot(rows, args.out.with_suffix(".png"))
    for g in result["growth"]:
        print(g)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
