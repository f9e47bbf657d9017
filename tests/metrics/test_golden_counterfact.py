"""kebench's CounterFact numbers against the authors' evaluation.

tests/golden/counterfact_official_unedited_n100.json holds the per-prompt NLLs (target_new,
target_true) and the summary that the official MEMIT/AlphaEdit code (compute_rewrite_quality_counterfact
and summarize.py) computes for the unedited default model on the first 100 records of the shipped
`counterfact-rome` file; its header says how it was made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kebench.metrics.counterfact import counterfact_evaluate, counterfact_record
from kebench.suites import get_suite

GOLDEN = json.loads((Path(__file__).resolve().parent.parent / "golden" / "counterfact_official_unedited_n100.json").read_text())
KINDS = {"rewrite": "rewrite_prompts_probs", "paraphrase": "paraphrase_prompts_probs", "neighbourhood": "neighborhood_prompts_probs"}


def _as_summarize_prints(records: list[dict[str, Any]]) -> dict[str, float]:
    """kebench's summary of `records` as the official summarize.py reports it: in %, to 2 decimals."""
    summary = get_suite("counterfact-rome").aggregate(records)
    names = {"ES": "efficacy_success", "PS": "paraphrase_success", "NS": "neighbourhood_success", "Score": "score"}
    return {short: round(100 * summary[name], 2) for short, name in names.items()}


def _official_summary() -> dict[str, float]:
    return {k: GOLDEN["aggregate_pre"][k] for k in ("ES", "PS", "NS", "Score")}


def test_aggregation_of_the_official_nlls_gives_the_official_summary():
    """Success conventions (strict comparisons, per-case means, harmonic mean) as summarize.py's."""
    records = [
        counterfact_record(str(c["case_id"]), *([tuple(p) for p in c[KINDS[k]]] for k in KINDS)) for c in GOLDEN["cases"]
    ]
    assert _as_summarize_prints(records) == _official_summary()


@pytest.mark.integration
def test_unedited_nlls_match_the_official_evaluation(real_lm):
    """Every prompt's NLL of both targets within 1e-3 of the authors' code, and the same summary."""
    cases = get_suite("counterfact-rome").load().cases[: len(GOLDEN["cases"])]  # the file's first 100 records
    assert [c.case_id for c in cases] == [str(g["case_id"]) for g in GOLDEN["cases"]]
    records = counterfact_evaluate(real_lm, cases, generation_tokens=0)
    diffs = [
        abs(ours - theirs)
        for record, golden in zip(records, GOLDEN["cases"], strict=True)
        for kind, key in KINDS.items()
        for pair, official in zip(record["nll"][kind], golden[key], strict=True)
        for ours, theirs in zip(pair, official, strict=True)
    ]
    assert len(diffs) == 2 * 13 * len(cases) and max(diffs) < 1e-3, max(diffs)
    assert _as_summarize_prints(records) == _official_summary()
