"""The CLI as a user meets it: one-line errors, compare tables, the report gate's exit status."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from kebench.cli import app
from kebench.editor import EDITORS

from tests.helpers import as_version_1, make_result

runner = CliRunner()


def _result(path, editor, efficacy, neighbourhood, dataset="counterfact", scale=20, overrides=(), stats=None, memory=None,
            hardware=None, hparams=None, version=2):
    """A results file at `path` built through the schema (tests.helpers.make_result); `version=1` writes it as a
    schema_version 1 file, whose identity readers derive from today's defaults."""
    post = {"efficacy_success": efficacy, "paraphrase_success": 0.5, "neighbourhood_success": neighbourhood, "score": 0.5}
    result = make_result(editor, dataset, scale, pre={k: 0.4 for k in post}, post=post, overrides=overrides, stats=stats,
                         memory=memory, hardware=hardware, hparams=hparams)
    path.write_text(json.dumps(result.to_json() if version == 2 else as_version_1(result)))
    return path


def _kebench(*args):
    """Run the installed console script, as a shell or CI meets it (exit status, stderr)."""
    exe = shutil.which("kebench")
    assert exe, "the `kebench` console script is not on PATH: install the package (pip install -e .)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--editor", "memmit", "--dataset", "counterfact"], "unknown editor 'memmit'; did you mean 'memit'?"),
        (["run", "--editor", "none", "--dataset", "zsr"], "unknown dataset 'zsr'"),
        (["run", "--editor", "none", "--dataset", "counterfact", "--scale", "2", "--model", "/nope/model"], "does not exist"),
        (["run", "--editor", "none", "--dataset", "counterfact", "--mode", "sequential"], "--batch-size"),
        (["compare", "/nope.json"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path):
    if args[0] == "run":
        args = [*args, "--out", str(tmp_path / "r.json")]
    proc = _kebench(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "--baseline", "results/ci"], "Missing option '--candidate'"),
        (["run", "--editor", "none", "--scale", "abc"], "Invalid value for '--scale'"),
        (["run", "--editor", "none", "--frobnicate"], "No such option: --frobnicate"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line_with_exit_status_2(args, message):
    proc = _kebench(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "--help" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_report_exit_status_reaches_the_shell(tmp_path):
    """The CI gate: `kebench report` run as a command exits 1 on a doctored regression, 0 when it passes."""
    (tmp_path / "ref").mkdir()
    (tmp_path / "cand").mkdir()
    _result(tmp_path / "ref" / "m.json", "memit", 0.95, 0.80)
    _result(tmp_path / "cand" / "m.json", "memit", 0.95, 0.80)
    ok = _kebench("report", "--baseline", str(tmp_path / "ref"), "--candidate", str(tmp_path / "cand"))
    assert ok.returncode == 0 and "**PASS**" in ok.stdout, ok.stdout + ok.stderr
    _result(tmp_path / "cand" / "m.json", "memit", 0.95, 0.60)
    bad = _kebench("report", "--baseline", str(tmp_path / "ref"), "--candidate", str(tmp_path / "cand"))
    assert bad.returncode == 1 and "REGRESSION" in bad.stdout, bad.stdout + bad.stderr


def test_run_defaults_to_counterfact(tmp_path):
    """The design's headline command names no suite: `kebench run --editor E --scale N` runs CounterFact."""
    out = tmp_path / "r.json"
    proc = _kebench("run", "--editor", "none", "--scale", "2", "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    saved = json.loads(out.read_text())
    assert saved["run"]["dataset"] == "counterfact"
    assert saved["metrics"]["general"]["pre"]["perplexity"] > 1  # general ability is measured by default
    assert "perplexity" in proc.stdout


def test_scale_above_dataset_size_is_one_line(tmp_path):
    proc = _kebench("run", "--editor", "none", "--dataset", "mquake", "--scale", "5000", "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and "exceeds the 325 cases" in proc.stderr and "Traceback" not in proc.stderr


def test_cuda_absent_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _kebench("run", "--editor", "none", "--dataset", "mquake", "--scale", "2", "--device", "cuda", "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and "CUDA requested but not available" in proc.stderr


def test_compare_report_draws_the_retention_curves_of_sequential_runs(tmp_path):
    import dataclasses

    from kebench.results import Retention, RetentionPoint

    points = tuple(RetentionPoint(cases=n, edits=n, metrics={"score": 0.9 - 0.1 * i}, general=None)
                   for i, n in enumerate((10, 20)))
    seq = dataclasses.replace(make_result("memit", scale=20, mode="sequential", batch_size=10),
                              retention=Retention(eval_at="immediate,10", points=points, immediate={"score": 0.95}))
    (tmp_path / "seq.json").write_text(json.dumps(seq.to_json()))
    _result(tmp_path / "batch.json", "memit", 0.95, 0.78)
    proc = _kebench("compare", str(tmp_path / "seq.json"), str(tmp_path / "batch.json"), "--markdown", str(tmp_path / "t.md"))
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "t.md").read_text()
    assert "![retention_counterfact](t_plots/retention_counterfact.png)" in md
    assert (tmp_path / "t_plots" / "retention_counterfact.png").stat().st_size > 1000


def test_compare_shows_all_runs(tmp_path):
    a = _result(tmp_path / "a.json", "none", 0.5, 0.8)
    b = _result(tmp_path / "b.json", "memit", 0.95, 0.78)
    res = runner.invoke(app, ["compare", str(a), str(b), "--markdown", str(tmp_path / "t.md")])
    assert res.exit_code == 0, res.output
    assert "memit" in res.output and "none" in res.output
    md = (tmp_path / "t.md").read_text()
    assert "### counterfact" in md and "| memit | 20 | batch | 95.0 (40.0)" in md
    assert "| 2.0 |" in md  # peak memory, GB
    assert "![scaling_counterfact](t_plots/scaling_counterfact.png)" in md
    assert (tmp_path / "t_plots" / "scaling_counterfact.png").stat().st_size > 1000
    assert "fit cache" not in md  # no run read its fitting from the cache


def test_compare_shows_fluency_in_bits_where_the_suite_measures_it(tmp_path):
    path = _result(tmp_path / "a.json", "memit", 0.95, 0.8, dataset="counterfact-rome")
    data = json.loads(path.read_text())
    data["metrics"]["pre"]["ngram_entropy"], data["metrics"]["post"]["ngram_entropy"] = 5.70, 5.612
    path.write_text(json.dumps(data))
    res = runner.invoke(app, ["compare", str(path), "--markdown", str(tmp_path / "t.md"), "--no-plots"])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "t.md").read_text()
    assert "| entropy (greedy 50) |" in md and "| 5.61 (5.70) |" in md  # named for what it is (not ROME's sampled entropy)


def test_compare_marks_runs_whose_fitting_came_from_the_cache(tmp_path):
    _result(tmp_path / "a.json", "memit", 0.95, 0.8, stats={"v_groups": 2, "v_cached_groups": 0})
    _result(tmp_path / "b.json", "alphaedit", 0.9, 0.8, stats={"v_groups": 2, "v_cached_groups": 2})
    _result(tmp_path / "c.json", "meg", 0.9, 0.8, stats={"fit_cached_chunks": 0, "diffusion_from_cache": True})
    _result(tmp_path / "d.json", "ft", 0.9, 0.8, stats={"v_cached_groups": 0, "update_resumed_steps": ["delta.4"]})
    res = runner.invoke(app, ["compare", str(tmp_path), "--markdown", str(tmp_path / "t.md"), "--no-plots"])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "t.md").read_text()
    # each rate: edited (unedited) and the lift over the unedited model, in points
    assert "| memit | 20 | batch | 95.0 (40.0) +55.0 | 50.0 (40.0) +10.0 | 80.0 (40.0) +40.0 | 50.0 (40.0) +10.0 | 0.50 |" in md
    for editor in ("alphaedit", "meg", "ft"):
        assert "| 0.50† |" in md.split(f"| {editor} |")[1].splitlines()[0], editor
    assert "† part of the fitting (or a resumed update's finished layers) was read from the fit cache" in md


def test_compare_names_the_gpu_a_run_was_timed_on_and_its_gpu_memory(tmp_path):
    _result(tmp_path / "a.json", "memit", 0.95, 0.8, hardware={"device": "cpu"})
    _result(tmp_path / "b.json", "memit", 0.95, 0.8, memory={"peak_rss_mb": 2048.0, "peak_cuda_mb": 8192.0},
            hardware={"device": "cuda:0", "gpu": "NVIDIA H200"})
    res = runner.invoke(app, ["compare", str(tmp_path), "--markdown", str(tmp_path / "t.md"), "--no-plots"])
    assert res.exit_code == 0, res.output
    rows = [r for r in (tmp_path / "t.md").read_text().splitlines() if r.startswith("| memit")]
    assert rows[0].startswith("| memit | 20 |") and rows[0].endswith("| 2.0 |")
    assert rows[1].startswith("| memit @ NVIDIA H200 | 20 |") and rows[1].endswith("| 8.0 |")


def test_compare_html_embeds_plots_and_keeps_ablations_apart(tmp_path):
    _result(tmp_path / "a.json", "meg", 0.99, 0.9)
    _result(tmp_path / "b.json", "meg", 0.99, 0.6, overrides=["gate.enabled=false"])
    res = runner.invoke(app, ["compare", str(tmp_path), "--html", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text()
    assert page.count("<tr>") == 3 and "meg [gate.enabled=false]" in page
    assert "data:image/png;base64," in page


def test_throughput_knobs_do_not_make_a_run_an_ablation(tmp_path):
    """Fitting 128 edits per step instead of 32 is the same configuration: same row, same gate key."""
    (tmp_path / "ref").mkdir()
    (tmp_path / "cand").mkdir()
    _result(tmp_path / "ref" / "a.json", "memit", 0.99, 0.9, overrides=["L2=10"])
    _result(tmp_path / "cand" / "a.json", "memit", 0.3, 0.9, overrides=["v_edits_per_batch=128", "L2=10"])
    res = runner.invoke(app, ["compare", str(tmp_path / "cand"), "--markdown", str(tmp_path / "t.md"), "--no-plots"])
    table = (tmp_path / "t.md").read_text()
    assert res.exit_code == 0 and "memit [L2=10]" in table and "v_edits_per_batch" not in table
    gate = runner.invoke(app, ["report", "--baseline", str(tmp_path / "ref"), "--candidate", str(tmp_path / "cand")])
    assert gate.exit_code == 1, gate.output  # paired with the reference, and its efficacy drop is caught


def test_a_run_made_under_other_defaults_is_its_own_configuration(tmp_path):
    """A schema_version 1 file (no recorded identity) made under another default: the old run shows (and
    gates) as `[key=old value]`, not as today's configuration; caching switches and keys the run predates
    are not differences."""
    today = dataclasses.asdict(EDITORS.get("alphaedit").default_hparams("default"))
    old = {**json.loads(json.dumps(today)), "L2": today["L2"] + 5.0, "v_cache": not today["v_cache"]}
    del old["nullspace_threshold"]  # a key this run predates
    (tmp_path / "ref").mkdir()
    (tmp_path / "cand").mkdir()
    _result(tmp_path / "ref" / "old.json", "alphaedit", 0.9, 0.9, hparams=old, version=1)
    _result(tmp_path / "cand" / "same.json", "alphaedit", 0.9, 0.9, hparams=json.loads(json.dumps(today)), version=1)
    _result(tmp_path / "cand" / "override.json", "alphaedit", 0.5, 0.9, overrides=[f"L2={today['L2'] + 5.0:g}"], hparams=old, version=1)
    # an override that today's default equals is no difference: the same row as a default run
    _result(tmp_path / "cand" / "as_default.json", "alphaedit", 0.9, 0.9, scale=30, overrides=[f"L2={today['L2']:g}"],
            hparams=json.loads(json.dumps(today)), version=1)
    res = runner.invoke(app, ["compare", str(tmp_path / "ref"), str(tmp_path / "cand"), "--markdown", str(tmp_path / "t.md"), "--no-plots"])
    table = (tmp_path / "t.md").read_text()
    label = f"alphaedit [L2={today['L2'] + 5.0:g}]"
    assert res.exit_code == 0 and table.count(label) == 2 and table.count("| alphaedit |") == 2, table
    assert "v_cache" not in table and "nullspace_threshold" not in table
    gate = runner.invoke(app, ["report", "--baseline", str(tmp_path / "ref"), "--candidate", str(tmp_path / "cand")])
    assert gate.exit_code == 1 and "REGRESSION" in gate.output  # paired with the old-L2 run, not today's


def test_report_pairs_ablations_with_their_own_reference(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "cand").mkdir()
    for d in ("ref", "cand"):
        _result(tmp_path / d / "a.json", "meg", 0.99, 0.9)
        _result(tmp_path / d / "b.json", "meg", 0.99, 0.6, overrides=["gate.enabled=false"])
    ok = runner.invoke(app, ["report", "--baseline", str(tmp_path / "ref"), "--candidate", str(tmp_path / "cand")])
    assert ok.exit_code == 0, ok.output


def test_report_gate_passes_within_tolerance_and_fails_beyond(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "cand").mkdir()
    _result(tmp_path / "ref" / "m.json", "memit", 0.95, 0.80)
    _result(tmp_path / "cand" / "m.json", "memit", 0.94, 0.80)
    ok = runner.invoke(app, ["report", "--baseline", str(tmp_path / "ref"), "--candidate", str(tmp_path / "cand")])
    assert ok.exit_code == 0 and "**PASS**" in ok.output
    _result(tmp_path / "cand" / "m.json", "memit", 0.95, 0.70)
    bad = runner.invoke(app, ["report", "--baseline", str(tmp_path / "ref"), "--candidate", str(tmp_path / "cand")])
    assert bad.exit_code == 1 and "REGRESSION" in bad.output and "neighbourhood_success" in bad.output
    loose = runner.invoke(
        app, ["report", "--baseline", str(tmp_path / "ref"), "--candidate", str(tmp_path / "cand"), "--tolerance", "0.2"]
    )
    assert loose.exit_code == 0


def test_report_fails_when_a_reference_run_has_no_candidate(tmp_path):
    ref = _result(tmp_path / "r.json", "memit", 0.9, 0.8)
    cand = _result(tmp_path / "c.json", "memit", 0.9, 0.8, dataset="counterfact-rome")
    res = runner.invoke(app, ["report", "--baseline", str(ref), "--candidate", str(cand)])
    assert res.exit_code == 1 and "NO CANDIDATE" in res.output


def test_list_names_editors_and_datasets():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0
    for name in ("memit", "alphaedit", "meg", "ft", "counterfact", "zsre", "mquake"):
        assert name in res.output


def test_help_documents_run_options():
    res = runner.invoke(app, ["run", "--help"])
    assert res.exit_code == 0 and "--resume" in res.output and "--batch-size" in res.output


def test_plot_writes_one_png_per_suite(tmp_path):
    for editor, n, eff in [("memit", 10, 0.9), ("memit", 100, 0.8), ("none", 10, 0.3)]:
        _result(tmp_path / f"{editor}{n}.json", editor, eff, 0.8, scale=n)
    res = runner.invoke(app, ["plot", str(tmp_path), "--out", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    png = tmp_path / "plots" / "scaling_counterfact.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_piped_keeps_whole_labels_and_rows(tmp_path):
    """Piped into a CI log, `kebench compare` shows every label whole (rich would read a lower-case
    `[gate.kind=similarity]` as markup) and cuts no column to the console's width."""
    _result(tmp_path / "a.json", "meg", 0.99, 0.9, overrides=["gate.kind=similarity"])
    _result(tmp_path / "b.json", "alphaedit", 0.9, 0.8, overrides=["L2=1"])
    proc = _kebench("compare", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "meg [gate.kind=similarity]" in proc.stdout and "alphaedit [L2=1]" in proc.stdout, proc.stdout
    assert "…" not in proc.stdout and "efficacy" in proc.stdout and "neighbourhood" in proc.stdout, proc.stdout


def test_compare_in_a_terminal_escapes_every_cell(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    import kebench.cli

    screen = io.StringIO()
    monkeypatch.setattr(kebench.cli, "console", Console(file=screen, force_terminal=True, width=220, color_system=None))
    _result(tmp_path / "a.json", "meg", 0.99, 0.9, overrides=["gate.kind=similarity"])
    res = runner.invoke(app, ["compare", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "meg [gate.kind=similarity]" in screen.getvalue(), screen.getvalue()


def _kebench_env(args, **env):
    """The console script with extra environment (GITHUB_STEP_SUMMARY unset unless given)."""
    import os

    environ = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    exe = shutil.which("kebench")
    assert exe, "the `kebench` console script is not on PATH: install the package (pip install -e .)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, env={**environ, **env})


def test_report_github_format_goes_to_the_job_summary(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "cand").mkdir()
    _result(tmp_path / "ref" / "m.json", "memit", 0.95, 0.80)
    _result(tmp_path / "cand" / "m.json", "memit", 0.95, 0.80)
    gate = ["report", "--baseline", str(tmp_path / "ref"), "--candidate", str(tmp_path / "cand"), "--format", "github"]
    ok = _kebench_env(gate)  # no job summary: the report goes to stdout
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "## kebench regression gate" in ok.stdout and "**PASS**" in ok.stdout and "| run |" not in ok.stdout

    _result(tmp_path / "cand" / "m.json", "memit", 0.95, 0.60)  # a doctored regression
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    bad = _kebench_env(gate, GITHUB_STEP_SUMMARY=str(summary))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL" in bad.stdout and "GITHUB_STEP_SUMMARY" in bad.stdout
    text = summary.read_text()
    assert text.startswith("earlier step\n## kebench regression gate"), text  # appended, not replaced
    assert "**FAIL**" in text and "| run | metric | reference | candidate | worse by |" in text
    assert "| memit/counterfact/n20/batch | neighbourhood_success | 80.0 | 60.0 | 20.0 |" in text, text
    assert "efficacy_success" not in text  # only what failed


def test_report_github_format_lists_reference_runs_without_a_candidate(tmp_path):
    ref = _result(tmp_path / "r.json", "memit", 0.9, 0.8)
    cand = _result(tmp_path / "c.json", "memit", 0.9, 0.8, dataset="counterfact-rome")
    res = _kebench_env(["report", "--baseline", str(ref), "--candidate", str(cand), "--format", "github"])
    assert res.returncode == 1 and "**FAIL**" in res.stdout and "`memit/counterfact/n20/batch` (r.json)" in res.stdout, res.stdout


def test_unknown_filter_and_a_filter_the_suite_cannot_take_are_one_line(tmp_path):
    for args, message in [
        (["--dataset", "counterfact", "--filter", "knwon"], "unknown filter 'knwon'; did you mean 'known'?"),
        (["--dataset", "mquake", "--filter", "known"], "--filter known needs the unedited model's rewrite scores"),
    ]:
        proc = _kebench("run", "--editor", "none", "--scale", "2", "--no-general", *args, "--out", str(tmp_path / "r.json"))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_model_without_settings_and_an_unknown_setting_are_one_line_with_status_2():
    """Through the installed script: the per-model files are listed, and a section's setting is named in full."""
    proc = _kebench("run", "--editor", "memit", "--model", "mistralai/Mistral-7B-v0.1", "--scale", "2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no settings for model 'mistralai/Mistral-7B-v0.1'" in lines[0] and "smollm2-135m.yaml" in lines[0]
    proc = _kebench("run", "--editor", "meg", "--hparam", "gate.bogus=1", "--scale", "2")
    assert proc.returncode == 2 and "unknown hyperparameter(s) gate.bogus" in proc.stderr and "gate.alpha" in proc.stderr


def test_hparams_file_gives_a_model_without_settings_its_own(tmp_path):
    """A model kebench has no file for runs with the user's own settings (--hparams-file); a missing one is one line."""
    from kebench.editor import EDITORS

    own = tmp_path / "mine.yaml"
    own.write_text("layers: [3]\nL2: 2.0\n")
    hp = EDITORS.get("alphaedit").default_hparams("mistralai/Mistral-7B-v0.1", settings_file=str(own))
    assert hp.layers == (3,) and hp.L2 == 2.0
    proc = _kebench("run", "--editor", "alphaedit", "--hparams-file", str(tmp_path / "absent.yaml"), "--scale", "2")
    assert proc.returncode == 2 and "--hparams-file" in proc.stderr and "Traceback" not in proc.stderr
