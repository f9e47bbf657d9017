"""The README's first run, executed as a newcomer types it (through the installed console script)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _first_run() -> list[str]:
    """The `kebench run ...` line of the README's set-up block."""
    block = README.read_text(encoding="utf-8").split("## Set-up and first run", 1)[1].split("```", 2)[1]
    (line,) = [ln for ln in block.splitlines() if ln.startswith("kebench run")]
    return shlex.split(line)


def test_the_first_run_is_small():
    args = _first_run()
    scale = int(args[args.index("--scale") + 1])
    assert scale <= 20, "the README's first run must finish in about a minute on a 2-core CPU"


@pytest.mark.integration
def test_the_readmes_first_run_edits_and_reports(tmp_path):
    exe = shutil.which("kebench")
    assert exe, "the `kebench` console script is not on PATH: install the package (pip install -e .)"
    out = tmp_path / "r.json"
    proc = subprocess.run([exe, *_first_run()[1:], "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    pre, post = result["metrics"]["pre"], result["metrics"]["post"]
    assert post["efficacy_success"] > pre["efficacy_success"]  # a real edit, visible in the summary
    assert re.search(r"efficacy_success\s.*\d", proc.stdout)


def test_the_readme_copies_no_results_table():
    """Results tables are generated (kebench compare --markdown) and linked, never pasted into the README."""
    text = README.read_text(encoding="utf-8")
    assert "| editor | n | mode |" not in text
    assert "results/smollm2-135m/TABLES.md" in text
