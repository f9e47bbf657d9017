"""The results schema (kebench.results): every committed file loads, a fresh run round-trips, a run's identity
is the one recorded when it ran (version 1 files: derived once, as compare always did), bad files are one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from kebench.compare import load_result, summarize
from kebench.errors import ConfigError
from kebench.results import SCHEMA_VERSION, ResultsFormatError, RunIdentity, RunInfo, RunResult, read_result
from kebench.runner import Run, RunConfig

from tests.helpers import as_version_1, make_result
from tests.test_cli import _kebench
from tests.test_runner import _cfg, loader  # noqa: F401  (the toy suite and its model loader fixture)

RESULTS = Path(__file__).resolve().parents[1] / "results"
# benchmark outputs (timings, FLOPs, sweeps), not results files of runs
NOT_RUN_RESULTS = RESULTS / "benchmarks"


def _committed() -> list[Path]:
    # a run in progress keeps its checkpoint beside its output (`<out>.ckpt/`, never committed)
    return sorted(p for p in RESULTS.rglob("*.json")
                  if NOT_RUN_RESULTS not in p.parents and not any(q.name.endswith(".ckpt") for q in p.parents))


def test_every_committed_results_file_loads_through_the_schema():
    files = _committed()
    assert files, f"no results files under {RESULTS}"
    for path in files:
        data = json.loads(path.read_text())
        result = RunResult.from_json(data)
        assert RunResult.from_json(result.to_json()) == result, path
        # nothing lost: written again, the file is the same but for the version, the identity block and the
        # run settings it predates (their values when unset)
        again = result.to_json()
        assert again.pop("schema_version") == SCHEMA_VERSION
        identity = again.pop("identity")
        assert identity and data.get("identity", identity) == identity, path  # a recorded identity is kept as written
        added = again["run"].keys() - data["run"].keys()
        assert added <= {"device_map", "case_filter", "general", "eval_at"}, (path, added)
        if "general" not in data["run"]:  # from before general ability: measured where the metrics have it
            assert result.run.general == ("general" in data["metrics"]), path
        for key in added:
            del again["run"][key]
        assert again == {k: v for k, v in data.items() if k not in ("schema_version", "identity")}, path
    for path in NOT_RUN_RESULTS.rglob("*.json"):  # the folder left out holds no run's results
        assert "schema_version" not in json.loads(path.read_text()), path


def test_run_info_holds_every_run_config_field_in_order():
    names = [f.name for f in dataclasses.fields(RunInfo)]
    config = [f.name for f in dataclasses.fields(RunConfig)]
    assert names[: len(config)] == config and names[len(config):] == ["n_cases", "n_requests", "processes"]


def test_a_fresh_run_round_trips_and_records_its_identity(tmp_path, loader):  # noqa: F811
    # "seed=0" and "batch_size=32" are ft's defaults: no difference, not part of the identity
    overrides = ("layers=[2]", "lr=0.01", "steps=5", "norm_constraint=0.05", "seed=0", "batch_size=32")
    out = tmp_path / "r.json"
    returned = Run(_cfg(mode="sequential", batch_size=2, hparam_overrides=overrides), out, model_loader=loader).execute()
    saved = json.loads(out.read_text())
    assert list(saved) == ["schema_version", "kebench_version", "run", "identity", "provenance", "hparams", "editor",
                           "timings_s", "seconds_per_edit", "memory", "editor_stats", "restore_bit_exact", "metrics", "cases"]
    assert saved["schema_version"] == SCHEMA_VERSION == 2
    result = read_result(out)
    assert result.to_json() == saved  # the file, field for field
    assert RunResult.from_json(result.to_json()) == result
    assert json.loads(json.dumps(returned)) == saved  # execute() returns what it wrote
    assert result.identity == RunIdentity(
        editor="ft", model="default", dataset="toy", scale=4, mode="sequential", batch_size=2, case_filter=None,
        overrides=("layers=[2]", "lr=0.01", "steps=5", "norm_constraint=0.05"),
    )
    assert load_result(out).label == "ft [layers=[2], lr=0.01, steps=5, norm_constraint=0.05]/toy/n4/sequential-b2"


def test_a_recorded_identity_is_not_recomputed_from_todays_defaults(tmp_path):
    """A run made under another default (its recorded L2 is not today's) keeps the identity it recorded; the
    same file as version 1, with no identity, gets it from today's defaults: `[L2=old value]`."""
    today = make_result("alphaedit")
    old = {**today.hparams, "L2": today.hparams["L2"] + 5.0}
    made_then = dataclasses.replace(today, hparams=old)  # its identity: no override, as its run recorded it
    assert summarize(tmp_path / "v2.json", made_then.to_json()).label == "alphaedit/counterfact/n20/batch"
    legacy = summarize(tmp_path / "v1.json", as_version_1(made_then))
    assert legacy.overrides == (f"L2={old['L2']:g}",)


def test_a_version_1_file_of_todays_configuration_gets_the_identity_a_run_records():
    for result in (make_result("meg", overrides=("familiarity=similarity", "fit_batch_size=8")),
                   make_result("memit", mode="sequential", batch_size=5, case_filter="known"),
                   make_result("alphaedit", overrides=("L2=10",))):  # today's default: no difference
        assert RunResult.from_json(as_version_1(result)).identity == result.identity
    assert make_result("meg", overrides=("familiarity=similarity", "fit_batch_size=8")).identity.overrides == (
        "gate.kind=similarity",)  # a throughput knob is no difference; a former name is recorded under today's
    assert make_result("meg", overrides=("gate.kind=similarity",)).identity == make_result(
        "meg", overrides=("familiarity=similarity",)).identity
    assert make_result("memit", mode="sequential", batch_size=5).identity.batch_size == 5
    assert make_result("memit", batch_size=5).identity.batch_size is None  # batch mode: one step whatever it says


def test_a_newer_schema_version_is_one_line(tmp_path):
    data = {**make_result().to_json(), "schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(ConfigError, match="upgrade kebench") as err:
        RunResult.from_json(data)
    assert "\n" not in str(err.value) and not isinstance(err.value, ResultsFormatError)
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data))
    proc = _kebench("compare", str(path))
    assert proc.returncode == 2 and "upgrade kebench" in proc.stderr and str(path) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d["metrics"].pop("post"), "metrics.post is missing"),
        (lambda d: d["run"].update(n_cases="20"), "run.n_cases is a string, expected an integer"),
        (lambda d: d["identity"].pop("overrides"), "identity.overrides is missing"),
        (lambda d: d.update(extra=1), "unknown field(s) extra"),
        (lambda d: d.pop("schema_version"), "(no schema_version)"),
        (lambda d: d["cases"].append({"case_id": "x"}), "cases[0] is not a {case_id, pre, post} record"),
    ],
)
def test_a_file_that_does_not_fit_the_schema_is_one_line_naming_the_field(tmp_path, damage, message):
    data = make_result().to_json()
    damage(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsFormatError) as err:
        read_result(path)
    text = str(err.value)
    assert text.startswith(f"{path} is not a kebench results file") and message in text and "\n" not in text, text


def test_a_run_with_its_own_settings_file_is_a_configuration_of_its_own():
    from kebench.results import RunInfo, run_identity
    from kebench.runner import RunConfig

    run = RunInfo.from_config(RunConfig(editor="memit", dataset="counterfact", scale=4, hparams_file="cfg/mine.yaml"),
                              n_cases=4, n_requests=4)
    assert run_identity("memit", run, {"L2": 1}, {"L2": 1}).overrides == ("hparams_file=mine.yaml",)
