"""End to end on the real default model and the real shipped data (marked integration)."""

from __future__ import annotations

import json
import math

import pytest

from kebench.runner import Run, RunConfig
from kebench.suites import get_suite

pytestmark = pytest.mark.integration


@pytest.fixture
def loader(real_lm):
    return lambda cfg: real_lm


@pytest.mark.parametrize("dataset, scale", [("counterfact-rome", 3), ("zsre", 4), ("mquake", 2)])
def test_none_runs_every_suite_and_changes_nothing(dataset, scale, tmp_path, loader, real_lm):
    out = tmp_path / f"{dataset}.json"
    cfg = RunConfig(editor="none", dataset=dataset, scale=scale, general=False)
    result = Run(cfg, out, model_loader=loader).execute()
    assert json.loads(out.read_text())["run"]["n_cases"] == scale
    assert result["provenance"]["data"]["files"][0]["sha256"]
    # The runner takes `none`'s post-edit records from its pre-edit ones (possibly cached): evaluate the
    # model again, afresh, and compare, so that a nondeterministic evaluation or a stale cache shows.
    suite = get_suite(dataset)
    cases = suite.sample(suite.load().cases, scale, cfg.seed)
    again = suite.evaluate(real_lm, cases, suite.references(real_lm, cases), None)
    for case, fresh in zip(result["cases"], again, strict=True):
        assert case["case_id"] == fresh["case_id"]
        numbers = [k for k, v in fresh.items() if isinstance(v, (int, float))]
        assert numbers and all(case["post"][k] == pytest.approx(fresh[k], abs=1e-5) for k in numbers), (case, fresh)


def test_ft_beats_none_on_counterfact_efficacy(tmp_path, loader):
    cfg = RunConfig(editor="ft", dataset="counterfact", scale=20, seed=0)
    result = Run(cfg, tmp_path / "ft.json", model_loader=loader).execute()
    pre, post = result["metrics"]["pre"], result["metrics"]["post"]
    assert post["efficacy_success"] >= pre["efficacy_success"] + 0.2, (pre, post)
    # general ability, measured before and after on the real model
    general = result["metrics"]["general"]
    assert 10 < general["pre"]["perplexity"] < 100 and 100 < general["pre"]["known_facts"] < 600
    assert math.isfinite(general["post"]["perplexity"]) and 0.0 <= general["post"]["retained_knowledge"] <= 1.0
    assert general["pre"]["generic_fluency"] > 3 and general["protocol"]["known_facts_sha256"]
