"""Old protocols against today's, per suite: the unedited and edited headline numbers of each reference run as a
results file at an older revision recorded them, beside the same run re-measured today (issue #21's closing table).

    python benchmarks/protocol_table.py [--old REV] [--root results/smollm2-135m]

REV defaults to the revision before the protocol changes (dd00428^: ZsRE without chat template, MQuAKE zero-shot,
CounterFact without the known filter). A run is listed where both revisions hold its results file and today's
was measured under today's protocols; a metric is listed where both files report it under the same name. The
editor's settings may differ too (each row names both files' commits): the table says what a user of each
revision read, not the protocol's effect alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from kebench.suites import SUITES

ROOT = Path(__file__).resolve().parent.parent
# All of a suite's cases under today's protocol where the old one had more: MQuAKE's protocol leaves out the 4
# MQuAKE-hard cases whose edits contradict each other, so today's all-case run (325) stands beside the old one (329).
ALL_CASES = {"mquake": (325, 329)}


def _at(rev: str, path: Path) -> dict | None:
    """The results file at `path` as revision `rev` held it (None where it did not)."""
    rel = path.resolve().relative_to(ROOT).as_posix()
    proc = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _cell(old: dict, new: dict, key: str) -> str:
    a, b = old.get(key), new.get(key)
    fmt = (lambda v: f"{v:.2f}") if key == "ngram_entropy" else (lambda v: f"{100 * v:.1f}")  # noqa: E731
    return f"{fmt(a)} → {fmt(b)}" if a is not None and b is not None else "–"


def _phase(result: dict, phase: str) -> dict:
    """The metrics of `phase`; a `none` run's post is its pre where the file records only that."""
    metrics = result["metrics"]
    return metrics[phase] if phase in metrics else metrics["pre"]


def _old_path(path: Path) -> Path:
    """Where the old revision kept the run of `path` (the same file, or its all-case run under the old count)."""
    today, before = ALL_CASES.get(path.parent.name, (None, None))
    if today is not None and f"-n{today}" in path.name:
        return path.with_name(path.name.replace(f"-n{today}", f"-n{before}"))
    return path


def table(old_rev: str, root: Path) -> str:
    """Markdown: per suite, each run re-measured under today's protocols (its file records general ability, which
    every run has since #23) whose file `old_rev` also holds, pre and post, old → new."""
    lines: list[str] = []
    for suite_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name in SUITES.names()):
        pairs = []
        for path in sorted(suite_dir.glob("*.json")):
            new = json.loads(path.read_text())
            if "general" in new["metrics"] and (old := _at(old_rev, _old_path(path))) is not None:
                pairs.append((path.stem, old, new))
        if not pairs:
            continue
        headline = SUITES.get(suite_dir.name).headline
        keys = [k for k in headline if any(k in _phase(o, "post") and k in _phase(n, "post") for _, o, n in pairs)]
        lines += [f"### {suite_dir.name}", "", "| run | phase | " + " | ".join(keys) + " | commits |",
                  "|---|---|" + "---|" * len(keys) + "---|"]
        for stem, old, new in pairs:
            commits = f"{old['provenance']['git']['commit'][:7]} → {new['provenance']['git']['commit'][:7]}"
            for phase in ("pre", "post"):
                o, n = _phase(old, phase), _phase(new, phase)
                lines.append(f"| {stem} | {phase} | " + " | ".join(_cell(o, n, k) for k in keys) + f" | {commits} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="dd00428^", help="the revision whose results files hold the old protocols")
    parser.add_argument("--root", type=Path, default=ROOT / "results" / "smollm2-135m")
    args = parser.parse_args()
    print(table(args.old, args.root))


if __name__ == "__main__":
    main()
