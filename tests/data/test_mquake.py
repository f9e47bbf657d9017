"""MQuAKE: every rewrite becomes a request; multi-hop questions become portability probes."""

from __future__ import annotations

import pytest

from kebench.data import ZSRE_TEMPLATE, load_cases, parse_records, read_records, shipped_path
from kebench.errors import DataError


def parse(records, **kw):
    return parse_records(records, suite="mquake", source="mq.json", **kw)


def test_mquake_record(mquake_record):
    (case,) = parse([mquake_record])
    assert case.case_id == "7417"
    assert [(r.text, r.target_new, r.target_true, r.case_id) for r in case.requests] == [
        ("Hey Jude was performed by", "Madonna", "The Beatles", "7417"),
        ("The official language of Australia is", "Arabic", "English", "7417"),
    ]
    assert [p.prompt for p in case.portability] == [ZSRE_TEMPLATE.replace("{}", q) for q in mquake_record["questions"]]
    # new answer first, aliases after, duplicates removed
    assert all(p.answers == ("Arabic", "ar", "Arabic language") for p in case.portability)
    assert case.paraphrases == () and case.neighbourhood == ()
    extra = case.extra
    assert extra["answer"] == "English" and extra["answer_alias"] == ("en",)
    assert extra["rewrite_questions"] == ("Who performed Hey Jude?", "What is the official language of Australia?")
    assert extra["single_hops"][0]["answer"] == "The Beatles"
    assert extra["new_single_hops"][0]["answer"] == "Madonna"
    assert extra["portability_kinds"] == ("multi_hop", "multi_hop")


def test_mquake_bad_rewrite_is_named_by_index(mquake_record):
    del mquake_record["requested_rewrite"][1]["target_new"]
    with pytest.raises(DataError, match=r"mq\.json: record 0 lacks 'requested_rewrite\[1\]\.target_new\.str'; expected MQuAKE"):
        parse([mquake_record])


def test_mquake_empty_rewrites_or_answer(mquake_record):
    with pytest.raises(DataError, match="empty 'new_answer'"):
        parse([dict(mquake_record, new_answer=" ")])
    with pytest.raises(DataError, match="empty 'requested_rewrite'"):
        parse([dict(mquake_record, requested_rewrite=[])], fmt="mquake")


def test_shipped_mquake_hard():
    raw = read_records(shipped_path("MQuAKE-hard.json"))
    cases = load_cases("mquake")
    assert len(cases) == len(raw) == 329
    assert {len(c.requests) for c in cases} == {4}
    assert {len(c.portability) for c in cases} == {3}
    for case, record in zip(cases, raw):
        assert [r.text for r in case.requests] == [
            rw["prompt"].replace("{}", rw["subject"]) for rw in record["requested_rewrite"]
        ]
        assert case.portability[0].answer == record["new_answer"]
    # edits are shared between cases: fewer distinct edits than requests
    assert len({r.key for c in cases for r in c.requests}) < 4 * 329
