"""`run --filter known`: CounterFact cases the unedited model already gets right, chosen from its records."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from kebench.cli import app
from kebench.data.shipped import read_records, shipped_path
from kebench.errors import ConfigError, DataError
from kebench.io import read_jsonl
from kebench.runner import Run, RunConfig, default_out_path

from tests.helpers import make_result

N_RECORDS = 16


@pytest.fixture
def cf_file(tmp_path):
    """The first records of the shipped CounterFact file, as a small file of the same layout."""
    path = tmp_path / "cf.json"
    path.write_text(json.dumps(read_records(shipped_path("counterfact-edit.json"))[:N_RECORDS]))
    return path


@pytest.fixture
def loader(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path / "cache"))
    return lambda cfg: tiny_lm


def _cfg(cf_file, **kw):
    return RunConfig(**{"editor": "none", "dataset": "counterfact", "data_file": str(cf_file), "chunk_size": 4, "general": False, **kw})


def _known(record):
    return all(true < new for new, true in record["nll"]["rewrite"])


def test_known_keeps_the_first_cases_the_unedited_model_gets_right(tmp_path, cf_file, loader):
    full = Run(_cfg(cf_file), tmp_path / "all.json", model_loader=loader).execute()
    pre = {c["case_id"]: c["pre"] for c in full["cases"]}
    known = [i for i, r in pre.items() if _known(r)]
    assert all(pre[i]["efficacy_success"] == 0.0 for i in known)
    assert 3 <= len(known) < N_RECORDS  # the tiny model knows some of them, not all

    every = Run(_cfg(cf_file, case_filter="known"), tmp_path / "known.json", model_loader=loader).execute()
    assert [c["case_id"] for c in every["cases"]] == known  # all of them, in file order
    assert every["selection"]["considered"] == N_RECORDS and every["selection"]["kept"] == len(known)
    assert every["metrics"]["pre"]["efficacy_success"] == 0.0

    result = Run(_cfg(cf_file, case_filter="known", scale=3), tmp_path / "k3.json", model_loader=loader).execute()
    order = list(pre)
    random.Random(0).shuffle(order)
    walked = [i for i in order if _known(pre[i])][:3]  # the first three known in the seeded shuffle ...
    ids = [c["case_id"] for c in result["cases"]]
    assert ids == [i for i in pre if i in walked]  # ... run in file order
    sel = result["selection"]
    assert result["run"]["n_cases"] == 3 and result["run"]["case_filter"] == "known"
    assert sel["filter"] == "known" and sel["kept"] == 3 and sel["case_ids"] == ids
    assert sel["considered"] == order.index(walked[-1]) + 1
    assert all(c["pre"]["efficacy_success"] == 0.0 for c in result["cases"])


def test_too_few_known_cases_is_a_data_error(tmp_path, cf_file, loader):
    with pytest.raises(DataError, match=r"only \d+ of the 16 cases .* pass; use --scale <= \d+"):
        Run(_cfg(cf_file, case_filter="known", scale=N_RECORDS), tmp_path / "r.json", model_loader=loader).execute()


def test_filter_is_part_of_the_run_identity(cf_file):
    plain, known = _cfg(cf_file, scale=5), _cfg(cf_file, scale=5, case_filter="known")
    assert "case_filter" not in plain.identity() and known.identity()["case_filter"] == "known"
    assert default_out_path(plain) != default_out_path(known)


def test_bad_filter_name_and_suite_are_config_errors(cf_file):
    with pytest.raises(ConfigError, match="unknown filter 'knwon'; did you mean 'known'"):
        _cfg(cf_file, case_filter="knwon").validate()
    with pytest.raises(ConfigError, match="--filter known needs .* 'zsre' has none"):
        RunConfig(editor="none", dataset="zsre", case_filter="known").validate()
    for suite in ("counterfact", "counterfact-rome", "counterfact-full"):
        RunConfig(editor="none", dataset=suite, case_filter="known").validate()


def test_compare_gives_a_filtered_run_its_own_table_and_shows_the_lift(tmp_path):
    def result(name, case_filter, pre, post):
        data = make_result("memit", "counterfact", 20, case_filter=case_filter, pre={"efficacy_success": pre},
                           post={"efficacy_success": post})
        (tmp_path / name).write_text(json.dumps(data.to_json()))

    result("all.json", None, 0.35, 0.95)
    result("known.json", "known", 0.0, 0.9)
    res = CliRunner().invoke(app, ["compare", str(tmp_path), "--markdown", str(tmp_path / "t.md"), "--no-plots"])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "t.md").read_text()
    assert "### counterfact\n" in md and "### counterfact:known\n" in md
    assert "| memit | 20 | batch | 95.0 (35.0) +60.0 |" in md
    assert "| memit | 20 | batch | 90.0 (0.0) +90.0 |" in md.split("### counterfact:known")[1]
