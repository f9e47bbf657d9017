"""The CI regression gate's reference (results/ci) is the configuration CI re-runs: one results file per job in
results/ci/jobs.txt, made with today's defaults. A reference made before a default changed carries that
setting as an override, so the gate's fresh run (the new default) has no reference to pair with and CI
fails on a missing candidate; this test says so in seconds, before the gate's runs."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from kebench.compare import load_result

CI = Path(__file__).resolve().parents[1] / "results" / "ci"


def _jobs() -> list[tuple[str, str, int, list[str]]]:
    jobs = []
    for line in (CI / "jobs.txt").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        editor, dataset, scale, *extra = shlex.split(line)
        jobs.append((editor, dataset, int(scale), extra))
    return jobs


def _hparam_keys(extra: list[str]) -> set[str]:
    """The keys a job sets with `--hparam key=value`."""
    return {value.split("=", 1)[0] for flag, value in zip(extra, extra[1:]) if flag == "--hparam"}


def test_the_gate_has_jobs():
    assert len(_jobs()) >= 5


@pytest.mark.parametrize("job", _jobs(), ids=lambda j: f"{j[1]}-{j[0]}-n{j[2]}")
def test_each_gate_job_has_a_reference_made_with_todays_defaults(job):
    editor, dataset, scale, extra = job
    path = CI / f"{dataset}-{editor}-n{scale}.json"  # the name benchmarks/ci_gate.sh writes
    assert path.is_file(), f"no reference for the gate job {editor} {dataset} {scale}: bash benchmarks/ci_gate.sh --update"
    run = load_result(path)
    assert (run.editor, run.dataset, run.scale, run.seed) == (editor, dataset, scale, 0)
    stale = [o for o in run.overrides if o.split("=", 1)[0] not in _hparam_keys(extra)]
    assert not stale, (
        f"{path.name} was made with settings that are no longer the defaults ({', '.join(stale)}): "
        "remake it with bash benchmarks/ci_gate.sh --update"
    )
