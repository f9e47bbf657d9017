"""CounterFact in EasyEdit and ROME layouts: subject slot, probes, answers, errors, shipped files."""

from __future__ import annotations

import json
import re

import pytest

from kebench.data import parse_records, read_records, shipped_path
from kebench.errors import DataError
from kebench.suites import load_cases


def parse(records, fmt=None):
    return parse_records(records, fmt, suite="counterfact", source="cf.json")


def test_easyedit_record_becomes_one_case(cf_easyedit):
    (case,) = parse([cf_easyedit])
    assert case.case_id == "7" and case.suite == "counterfact"
    (req,) = case.requests
    assert req.prompt == "The mother tongue of {} is"
    assert (req.subject, req.target_new, req.target_true, req.case_id) == ("Danielle Darrieux", "English", "French", "7")
    assert case.paraphrases == ("Where Danielle Darrieux is from, people speak the language of",)
    assert [(p.prompt, p.answers) for p in case.neighbourhood] == [("Michel Rocard is a native speaker of", ("French",))]
    assert case.portability == () and case.generation_prompts == ()


def test_easyedit_slot_replaces_the_last_occurrence(cf_easyedit):
    cf_easyedit.update(prompt="Paris Hilton said that Paris is the capital of", subject="Paris")
    (case,) = parse([cf_easyedit])
    assert case.request.prompt == "Paris Hilton said that {} is the capital of"
    assert case.request.text == cf_easyedit["prompt"]


def test_easyedit_subject_matched_case_insensitively_keeps_the_prompt_spelling(cf_easyedit):
    cf_easyedit.update(prompt="the iPhone is made by", subject="The iPhone")
    (case,) = parse([cf_easyedit])
    assert case.request.prompt == "{} is made by"
    assert case.request.subject == "the iPhone"
    assert case.request.text == "the iPhone is made by"


def test_easyedit_subject_absent_from_prompt_is_an_error(cf_easyedit):
    cf_easyedit["subject"] = "Michel Rocard"
    with pytest.raises(DataError, match=r"cf\.json: record 0 has subject 'Michel Rocard' that does not occur"):
        parse([cf_easyedit])


def test_missing_field_names_file_record_field_and_format(cf_easyedit):
    bad = dict(cf_easyedit)
    del bad["target_new"]
    # detection still sees record 0's keys; the missing field is in record 1
    with pytest.raises(DataError) as err:
        parse([cf_easyedit, bad])
    assert str(err.value).startswith(
        "cf.json: record 1 lacks 'target_new'; expected CounterFact EasyEdit format (case_id, prompt, subject, target_new"
    )


@pytest.mark.parametrize("field", ["target_new", "ground_truth"])
def test_empty_targets_are_errors(cf_easyedit, field):
    cf_easyedit[field] = "   "
    with pytest.raises(DataError, match=rf"record 0 has an empty '{field}'"):
        parse([cf_easyedit])


def test_targets_are_stripped(cf_easyedit):
    cf_easyedit["target_new"] = " English "
    assert parse([cf_easyedit])[0].target_new == "English"


def test_literal_braces_in_prompt_are_refused(cf_easyedit):
    cf_easyedit["prompt"] = "The {} mother tongue of Danielle Darrieux is"
    with pytest.raises(DataError, match="literal '{}'"):
        parse([cf_easyedit])


def test_wrong_field_type_is_named(cf_easyedit):
    cf_easyedit["target_new"] = ["English"]
    with pytest.raises(DataError, match="record 0 has 'target_new' of type list, not a string"):
        parse([cf_easyedit])


def test_rome_record(cf_rome):
    (case,) = parse([cf_rome])
    req = case.request
    assert (req.prompt, req.subject, req.target_new, req.target_true) == ("{}, created by", "Porsche 911", "Honda", "Porsche")
    assert req.text == "Porsche 911, created by"
    assert case.paraphrases == tuple(cf_rome["paraphrase_prompts"])
    assert [p.prompt for p in case.neighbourhood] == cf_rome["neighborhood_prompts"]
    assert all(p.answers == ("Porsche",) for p in case.neighbourhood)
    assert case.generation_prompts == tuple(cf_rome["generation_prompts"])
    assert case.extra["attribute_prompts"] == ("Honda Aviator is produced by",)
    assert case.extra["relation_id"] == "P176" and case.extra["pararel_idx"] == 3603


def test_rome_nested_missing_field_is_named_by_its_path(cf_rome):
    del cf_rome["requested_rewrite"]["target_new"]["str"]
    with pytest.raises(DataError, match=r"record 0 lacks 'requested_rewrite\.target_new\.str'; expected CounterFact ROME"):
        parse([cf_rome])


def test_rome_prompt_without_slot_is_an_error(cf_rome):
    cf_rome["requested_rewrite"]["prompt"] = "Porsche 911, created by"
    with pytest.raises(DataError, match="without exactly one '{}'"):
        parse([cf_rome])


def test_rome_without_generation_prompts_is_fine(cf_rome):
    del cf_rome["generation_prompts"], cf_rome["attribute_prompts"]
    (case,) = parse([cf_rome])
    assert case.generation_prompts == () and case.extra["attribute_prompts"] == ()


# --- shipped files -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def counterfact_cases():
    return load_cases("counterfact")


def test_shipped_easyedit_counts_and_placeholder(counterfact_cases):
    raw = read_records(shipped_path("counterfact-edit.json"))
    assert len(counterfact_cases) == len(raw) == 10000
    for case, record in zip(counterfact_cases, raw):
        assert case.case_id == str(record["case_id"])
        assert case.request.text == record["prompt"]
        assert case.request.prompt.count("{}") == 1
        assert case.neighbourhood[0].answers == (record["locality_ground_truth"],)
    assert {len(c.paraphrases) for c in counterfact_cases} == {1}


def test_shipped_rome_subset_counts():
    cases = load_cases("counterfact-rome")
    assert len(cases) == 336
    assert {(len(c.paraphrases), len(c.neighbourhood), len(c.generation_prompts)) for c in cases} == {(2, 10, 10)}
    assert all(re.fullmatch(r"\d+", c.case_id) for c in cases)
    assert all(p.answers == (c.target_true,) for c in cases for p in c.neighbourhood)


def test_user_file_in_rome_layout_loads_under_counterfact(write_json, cf_rome):
    path = write_json("mine.json.gz", [cf_rome])
    (case,) = load_cases("counterfact", path)
    assert case.suite == "counterfact" and case.request.target_new == "Honda"


def test_counterfact_dump_roundtrip_is_json_safe(counterfact_cases):
    # extra must stay JSON-serialisable for results files
    json.dumps([c.extra for c in counterfact_cases[:50]])
