"""End to end on the real default model and the real shipped data (marked integration)."""

from __future__ import annotations

import json

import pytest

from kebench.runner import Run, RunConfig

pytestmark = pytest.mark.integration


@pytest.fixture
def loader(real_lm):
    return lambda cfg: real_lm


@pytest.mark.parametrize("dataset, scale", [("counterfact-rome", 3), ("zsre", 4), ("mquake", 2)])
def test_none_runs_every_suite_and_changes_nothing(dataset, scale, tmp_path, loader):
    out = tmp_path / f"{dataset}.json"
    result = Run(RunConfig(editor="none", dataset=dataset, scale=scale), out, model_loader=loader).execute()
    assert json.loads(out.read_text())["run"]["n_cases"] == scale
    pre, post = result["metrics"]["pre"], result["metrics"]["post"]
    shared = [k for k in pre if isinstance(pre[k], float)]
    assert shared and all(pre[k] == pytest.approx(post[k]) for k in shared)  # evaluation is deterministic
    assert result["restore_bit_exact"]
    assert result["provenance"]["data"]["files"][0]["sha256"]


def test_ft_beats_none_on_counterfact_efficacy(tmp_path, loader):
    cfg = RunConfig(editor="ft", dataset="counterfact", scale=20, seed=0)
    result = Run(cfg, tmp_path / "ft.json", model_loader=loader).execute()
    pre, post = result["metrics"]["pre"], result["metrics"]["post"]
    assert post["efficacy_success"] >= pre["efficacy_success"] + 0.2, (pre, post)
    assert result["restore_bit_exact"]
