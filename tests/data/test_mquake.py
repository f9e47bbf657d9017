"""MQuAKE: every rewrite becomes a request; multi-hop questions become portability probes."""

from __future__ import annotations

import pytest

from kebench.data import parse_records, read_records, shipped_path
from kebench.data.case import EditCase, EditRequest
from kebench.data.mquake import MULTIHOP_FORMAT, conflicting_cases, drop_conflicting, multihop_prompt
from kebench.errors import DataError
from kebench.suites import get_suite, load_cases


def parse(records, **kw):
    return parse_records(records, suite="mquake", source="mq.json", **kw)


def test_mquake_record(mquake_record):
    (case,) = parse([mquake_record])
    assert case.case_id == "7417"
    assert [(r.text, r.target_new, r.target_true, r.case_id) for r in case.requests] == [
        ("Hey Jude was performed by", "Madonna", "The Beatles", "7417"),
        ("The official language of Australia is", "Arabic", "English", "7417"),
    ]
    assert [p.prompt for p in case.portability] == [multihop_prompt(q) for q in mquake_record["questions"]]
    assert case.portability[0].prompt.endswith(f"\nQ: {mquake_record['questions'][0]} A:")
    # new answer first, aliases after, duplicates removed
    assert all(p.answers == ("Arabic", "ar", "Arabic language") for p in case.portability)
    assert case.paraphrases == () and case.neighbourhood == ()
    extra = case.extra
    assert extra["answer"] == "English" and extra["answer_alias"] == ("en",)
    assert extra["rewrite_questions"] == ("Who performed Hey Jude?", "What is the official language of Australia?")
    assert extra["single_hops"][0]["answer"] == "The Beatles"
    assert extra["new_single_hops"][0]["answer"] == "Madonna"
    assert extra["portability_kinds"] == ("multi_hop", "multi_hop")
    assert extra["prompt_format"] == MULTIHOP_FORMAT


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
    cases = load_cases("mquake")  # as every run loads it: less the four contradictory cases (below)
    assert len(raw) == 329 and len(cases) == 325
    assert {len(c.requests) for c in cases} == {4}
    assert {len(c.portability) for c in cases} == {3}
    by_id = {str(r["case_id"]): r for r in raw}
    for case in cases:
        record = by_id[case.case_id]
        assert [r.text for r in case.requests] == [
            rw["prompt"].replace("{}", rw["subject"]) for rw in record["requested_rewrite"]
        ]
        assert case.portability[0].answer == record["new_answer"]
    # edits are shared between cases: fewer distinct edits than requests
    assert len({r.key for c in cases for r in c.requests}) < 4 * 325


def _toy(case_id: str, *rewrites: tuple[str, str, str], relation_ids=None) -> EditCase:
    requests = tuple(EditRequest(prompt, subject, new, "old", case_id) for prompt, subject, new in rewrites)
    extra = {"relation_ids": relation_ids} if relation_ids else {}
    return EditCase(case_id=case_id, suite="mquake", requests=requests, extra=extra)


def test_conflicting_cases_in_a_toy_batch():
    batch = [
        _toy("a", ("{} was developed by", "Portal", "Epic Games"), ("The capital of {} is", "France", "Rome")),
        _toy("b", ("{} was developed by", "Portal", "Sony")),  # contradicts a
        _toy("c", ("{} was developed by", "Portal", "Epic Games")),  # the same edit as a: no conflict with a ...
        _toy("d", ("The capital of {} is", "Spain", "Rome")),  # another subject: no conflict
        # the same relation and subject asked with another cloze prompt, by relation_id
        _toy("e", ("{} has its capital at", "France", "Lyon"), relation_ids=("P36",)),
        _toy("f", ("The capital of {} is", "France", "Marseille"), relation_ids=("P36",)),
    ]
    conflicts = conflicting_cases(batch)
    assert sorted(conflicts) == ["a", "b", "c", "e", "f"]  # ... but c still contradicts b
    assert conflicts["b"] == ["Portal | {} was developed by: Epic Games / Sony"]
    assert conflicts["e"] == ["France | P36: Lyon / Marseille"]
    kept, dropped = drop_conflicting(batch)
    assert [c.case_id for c in kept] == ["d"] and dropped == conflicts
    assert conflicting_cases(kept) == {}


def test_mquake_suite_leaves_out_contradictory_cases():
    data = get_suite("mquake").load()
    assert len(data.cases) == 329 - 4
    excluded = data.provenance()["excluded_cases"]
    assert excluded["n"] == 4 and excluded["case_ids"] == ["7699", "8236", "8563", "8695"]
    assert any("7699" in note for note in data.notes)
    assert conflicting_cases(data.cases) == {}
