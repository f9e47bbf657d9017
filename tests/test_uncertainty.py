"""Uncertainty: bootstrap intervals over cases, the paired bootstrap behind `kebench report`, seeds pooled by `compare`."""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

import kebench.metrics.uncertainty as unc
from kebench.compare import load_result, regression_gate
from kebench.errors import DataError
from kebench.metrics.counterfact import rewrite_magnitude, rewrite_success
from kebench.metrics.uncertainty import bootstrap_intervals, interval_record, paired_bootstrap_drop
from kebench.suites import get_suite, post_metrics

from tests.test_cli import _kebench, _result

# a real results file: 1,000 CounterFact cases edited by MEMIT (efficacy about 94%), read only
SOURCE = Path(__file__).resolve().parents[1] / "results" / "smollm2-135m" / "counterfact" / "memit-n1000.json"
SUITE = get_suite("counterfact")


@pytest.fixture(scope="module")
def memit() -> dict:
    if not SOURCE.exists():
        pytest.skip(f"{SOURCE} is not in this checkout")
    return json.loads(SOURCE.read_text())


def _sides(cases: list[dict]) -> tuple[list[dict], list[dict]]:
    return [c["pre"] for c in cases], [c["post"] for c in cases]


def _flipped(case: dict, success: bool) -> dict:
    """The case with its edited rewrite prompts turned to success (new target likelier) or failure."""
    case = copy.deepcopy(case)
    post = case["post"]
    pairs = [[min(a, b), max(a, b)] if success else [max(a, b), min(a, b)] for a, b in post["nll"]["rewrite"]]
    post["nll"]["rewrite"] = pairs
    post["efficacy_success"], post["efficacy_magnitude"] = rewrite_success(pairs), rewrite_magnitude(pairs)
    return case


def _perturbed(data: dict, down: int, up: int, seed: int = 0) -> dict:
    """A copy of a results file with `down` successful edits made to fail and `up` failed ones made to succeed,
    its metrics recomputed from the records (the same cases, so a paired comparison applies)."""
    data = copy.deepcopy(data)
    cases = data["cases"]
    rng = random.Random(seed)
    hits = [i for i, c in enumerate(cases) if c["post"]["efficacy_success"] == 1.0]
    misses = [i for i, c in enumerate(cases) if c["post"]["efficacy_success"] == 0.0]
    for i in rng.sample(hits, down):
        cases[i] = _flipped(cases[i], success=False)
    for i in rng.sample(misses, up):
        cases[i] = _flipped(cases[i], success=True)
    pre, post = _sides(cases)
    data["metrics"]["post"] = post_metrics(SUITE, pre, post)
    data["metrics"].pop("intervals", None)
    return data


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# ----------------------------------------------------------------------------- intervals


def test_interval_contains_the_point_estimate_and_shrinks_with_more_cases(memit):
    pre, post = _sides(memit["cases"])
    few = bootstrap_intervals(SUITE, pre[:100], post[:100])
    many = bootstrap_intervals(SUITE, pre, post)
    point = post_metrics(SUITE, pre, post)
    for metric in SUITE.headline:
        lo, hi = many[metric]
        assert lo <= point[metric] <= hi, (metric, lo, point[metric], hi)
        assert hi - lo < few[metric][1] - few[metric][0], metric
    # a rate over 1,000 cases: about ±1.96 sqrt(p(1-p)/n), 1.5 points at 94%
    lo, hi = many["efficacy_success"]
    p = point["efficacy_success"]
    assert (hi - lo) / 2 == pytest.approx(1.96 * np.sqrt(p * (1 - p) / 1000), rel=0.2)


def test_intervals_are_seeded_and_fast(memit):
    """Headline aggregates of 1,000 cases x 1,000 resamples, pre and post, in seconds (bound loose for busy CI)."""
    pre, post = _sides(memit["cases"])
    t0 = time.perf_counter()
    record = interval_record(SUITE, pre, post, n_resamples=1000, level=0.95, seed=0)
    assert time.perf_counter() - t0 < 20
    assert record["level"] == 0.95 and record["n_resamples"] == 1000
    assert set(SUITE.headline) <= set(record["post"]) and "n_cases" not in record["post"]
    assert record == interval_record(SUITE, pre, post, seed=0)
    assert record["post"] != interval_record(SUITE, pre, post, seed=1)["post"]


def test_the_fast_path_equals_recomputing_each_resample(memit, monkeypatch):
    """Means by matrix products and neighbourhood_kept as a ratio of counts give what the suite's own
    aggregate and paired functions give on every resampled list of records."""
    pre, post = _sides(memit["cases"][:150])
    fast = interval_record(SUITE, pre, post, n_resamples=60)
    monkeypatch.setattr(unc._Aggregated, "verify", lambda self, *a: setattr(self, "fast", set()))
    monkeypatch.setattr(unc, "RATIO_PARTS", {})
    slow = interval_record(SUITE, pre, post, n_resamples=60)
    for side in ("pre", "post"):
        assert fast[side].keys() == slow[side].keys()
        for metric, bounds in fast[side].items():
            assert bounds == pytest.approx(slow[side][metric], abs=1e-12), (side, metric)


def test_bad_level_is_one_line():
    with pytest.raises(Exception, match="--level must be between 0 and 1"):
        unc.check_level(95, 1000)


# ----------------------------------------------------------------------------- paired bootstrap


def test_paired_drop_catches_an_injected_five_point_drop(memit):
    candidate = _perturbed(memit, down=50, up=0)
    test = paired_bootstrap_drop(SUITE, memit["cases"], candidate["cases"], "efficacy_success")
    assert test.observed == pytest.approx(0.05)
    assert test.real and test.prob_worse > 0.99 and test.lower > 0.02


def test_paired_drop_does_not_flag_pure_noise(memit):
    """The same run with a few cases perturbed both ways by equal amounts: no real drop."""
    candidate = _perturbed(memit, down=10, up=10, seed=1)
    test = paired_bootstrap_drop(SUITE, memit["cases"], candidate["cases"], "efficacy_success")
    assert test.observed == pytest.approx(0.0, abs=1e-12) and not test.real and test.interval[0] < 0 < test.interval[1]
    same = paired_bootstrap_drop(SUITE, memit["cases"], memit["cases"], "score")
    assert same.observed == 0 and same.prob_worse == 0 and not same.real


def test_paired_drop_needs_the_same_cases(memit):
    with pytest.raises(DataError, match="do not share their cases") as err:
        paired_bootstrap_drop(SUITE, memit["cases"], memit["cases"][1:], "efficacy_success")
    assert "\n" not in str(err.value) and "--seed" in str(err.value)


def test_gate_needs_the_drop_beyond_tolerance_and_real(memit, tmp_path):
    ref = _write(tmp_path / "ref" / "m.json", memit)
    noisy = _write(tmp_path / "noise" / "m.json", _perturbed(memit, down=10, up=6))  # 0.4 points worse
    base, cand = [load_result(ref)], [load_result(noisy)]
    gate = regression_gate(base, cand, 0.002)
    assert not gate.failed and [r.metric for r in gate.noise] == ["efficacy_success"]
    assert 0.5 < gate.noise[0].test.prob_worse < 0.95
    assert [r.metric for r in regression_gate(base, cand, 0.002, level=None).regressions] == ["efficacy_success"]


# ----------------------------------------------------------------------------- the CLI gate


def _gate(ref: Path, cand: Path, *extra: str):
    return _kebench("report", "--baseline", str(ref), "--candidate", str(cand), *extra)


def test_report_catches_an_injected_five_point_drop(memit, tmp_path):
    _write(tmp_path / "ref" / "m.json", memit)
    _write(tmp_path / "cand" / "m.json", _perturbed(memit, down=50, up=0))
    proc = _gate(tmp_path / "ref", tmp_path / "cand", "--tolerance", "0.02")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "| efficacy_success |" in line)
    assert "REGRESSION" in row and "P(worse) 1.000" in row, row


def test_report_does_not_flag_resampling_noise(memit, tmp_path):
    _write(tmp_path / "ref" / "m.json", memit)
    _write(tmp_path / "cand" / "m.json", _perturbed(memit, down=10, up=6))  # beyond a 0.2-point tolerance
    proc = _gate(tmp_path / "ref", tmp_path / "cand", "--tolerance", "0.002")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "**PASS**" in proc.stdout and "REGRESSION" not in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if "| efficacy_success |" in line)
    assert "| noise |" in row and "P(worse)" in row, row
    github = _gate(tmp_path / "ref", tmp_path / "cand", "--tolerance", "0.002", "--format", "github")
    assert github.returncode == 0 and "within resampling noise" in github.stdout, github.stdout


def test_report_falls_back_to_the_tolerance_when_cases_cannot_be_paired(memit, tmp_path):
    _write(tmp_path / "ref" / "m.json", memit)
    other = _perturbed(memit, down=50, up=0)
    other["cases"] = other["cases"][1:]  # not the reference's cases any more
    _write(tmp_path / "cand" / "m.json", other)
    proc = _gate(tmp_path / "ref", tmp_path / "cand", "--tolerance", "0.02")
    assert proc.returncode == 1 and "tolerance alone" in proc.stdout and "do not share their cases" in proc.stdout, proc.stdout
    github = _gate(tmp_path / "ref", tmp_path / "cand", "--tolerance", "0.02", "--format", "github")
    assert github.returncode == 1 and "tolerance alone" in github.stdout, github.stdout


def test_report_level_is_checked(tmp_path):
    ref = _result(tmp_path / "r.json", "memit", 0.9, 0.8)
    proc = _gate(ref, ref, "--level", "95")
    assert proc.returncode == 2 and "--level must be between 0 and 1" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- compare: ± and seeds


def test_compare_ci_shows_plusminus_from_the_cases_of_an_older_file(memit, tmp_path):
    older = dict(memit)
    older["metrics"] = {k: v for k, v in memit["metrics"].items() if k != "intervals"}  # computed from its cases
    path = _write(tmp_path / "m.json", older)
    proc = _kebench("compare", str(path), "--ci")
    assert proc.returncode == 0, proc.stderr
    pre, post = _sides(memit["cases"])
    half = (lambda lo, hi: 100 * (hi - lo) / 2)(*bootstrap_intervals(SUITE, pre, post)["efficacy_success"])
    edited, unedited = (100 * sum(r["efficacy_success"] for r in side) / len(side) for side in (post, pre))
    assert f"{edited:.1f} ±{half:.1f} ({unedited:.1f}) +{edited - unedited:.1f}" in proc.stdout, proc.stdout
    assert "±: in a row of one run, half the width of the 95% percentile bootstrap interval" in proc.stdout
    assert "±" not in _kebench("compare", str(path)).stdout  # only when asked


def test_compare_pools_runs_that_differ_only_in_seed(tmp_path):
    for seed, efficacy in [(0, 0.90), (1, 0.94), (2, 0.98)]:
        path = _result(tmp_path / f"memit-s{seed}.json", "memit", efficacy, 0.8)
        data = json.loads(path.read_text())
        data["run"]["seed"] = seed
        path.write_text(json.dumps(data))
    _result(tmp_path / "none.json", "none", 0.4, 0.8)
    proc = _kebench("compare", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| memit")]
    assert len(rows) == 1 and rows[0].startswith("| memit | 20 | batch | 0,1,2 | 94.0 ±4.0 (40.0) +54.0 |"), proc.stdout
    assert "| none | 20 | batch | 0 |" in proc.stdout
    assert "the standard deviation across those seeds" in proc.stdout


def test_run_seeds_writes_one_results_file_per_seed_with_intervals(tmp_path):
    out = tmp_path / "r.json"
    proc = _kebench("run", "--editor", "none", "--scale", "3", "--seeds", "0,1", "--quiet", "--no-general", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert not out.exists()
    for seed in (0, 1):
        saved = json.loads((tmp_path / f"r-s{seed}.json").read_text())
        assert saved["run"]["seed"] == seed
        intervals = saved["metrics"]["intervals"]
        assert intervals["level"] == 0.95 and intervals["n_resamples"] == 1000
        lo, hi = intervals["post"]["efficacy_success"]
        assert lo <= saved["metrics"]["post"]["efficacy_success"] <= hi
    table = _kebench("compare", str(tmp_path))
    assert table.returncode == 0 and "| none | 3 | batch | 0,1 |" in table.stdout, table.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "0,x"], "cannot read --seeds '0,x'"),
        (["--seeds", "0,1,0"], "--seeds lists seed 0 more than once"),
        (["--seeds", "0,1", "--seed", "3"], "pass --seed N or --seeds A,B,C, not both"),
    ],
)
def test_bad_seeds_are_one_line(args, message, tmp_path):
    proc = _kebench("run", "--editor", "none", "--scale", "2", *args, "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
