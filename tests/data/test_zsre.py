"""zsRE in MEND and KnowEdit layouts: templates, subject slot, locality/portability, shipped suites."""

from __future__ import annotations

import pytest

from kebench.data import ZSRE_TEMPLATE, parse_records, read_records, shipped_path
from kebench.data.zsre import question_key
from kebench.errors import ConfigError, DataError
from kebench.suites import load_cases


def wrap(question: str) -> str:
    return ZSRE_TEMPLATE.replace("{}", question)


def parse(records, fmt=None, **kw):
    return parse_records(records, fmt, suite="zsre", source="zsre.json", **kw)


def test_mend_record(zsre_mend):
    (case,) = parse([zsre_mend])
    req = case.request
    assert case.case_id == req.case_id == "zsre:0"
    assert req.text == wrap("What is the product made by UniFirst?")
    assert req.prompt == wrap("What is the product made by {}?")
    assert (req.subject, req.target_new, req.target_true) == ("UniFirst", "unmanned aircraft", "uniform")
    assert case.paraphrases == (wrap("What will be the product of UniFirst?"),)
    (loc,) = case.neighbourhood
    assert loc.prompt == wrap("john goodman's character in the big lebowski")  # "nq question:" stripped
    assert loc.answers == ("Walter Sobchak",)
    (port,) = case.portability
    assert port.prompt == wrap("Which aircraft does UniFirst make?") and port.answers == ("drones",)
    assert case.extra["answers"] == ("uniform", "uniforms")
    assert case.extra["subject_in_prompt"] is True
    assert case.extra["question"] == "What is the product made by UniFirst?"
    assert case.extra["portability_kinds"] == ("one_hop",)


def test_mend_without_portability_or_answers(zsre_mend):
    del zsre_mend["portability"]
    zsre_mend["answers"] = []
    (case,) = parse([zsre_mend])
    assert case.portability == () and case.target_true is None


def test_custom_template_is_applied_everywhere(zsre_mend):
    template = "Q: Answer in a few words. {}\nA:"
    (case,) = parse([zsre_mend], template=template)
    prompts = [case.prompt, *case.paraphrases, *(p.prompt for p in case.neighbourhood + case.portability)]
    assert all(p.startswith("Q: Answer in a few words. ") and p.endswith("\nA:") for p in prompts)
    assert case.extra["template"] == template


@pytest.mark.parametrize("template", ["Question: {q}\nAnswer:", "{} and {}", "no slot"])
def test_bad_template_is_a_config_error(zsre_mend, template):
    with pytest.raises(ConfigError, match="exactly once"):
        parse([zsre_mend], template=template)


def test_subject_missing_from_question_puts_slot_at_the_end(zsre_mend):
    zsre_mend["subject"] = "Acme Corporation"
    (case,) = parse([zsre_mend])
    req = case.request
    assert req.subject == "" and req.prompt.endswith("{}")
    assert req.text == wrap("What is the product made by UniFirst?")
    assert case.extra["subject_in_prompt"] is False


def test_subject_found_case_insensitively(zsre_mend):
    zsre_mend["subject"] = "unifirst"
    (case,) = parse([zsre_mend])
    assert case.request.subject == "UniFirst" and case.extra["subject_in_prompt"] is True
    assert case.request.text == wrap(zsre_mend["src"])


def test_empty_alt_is_an_error_unless_dropped(zsre_mend):
    good = dict(zsre_mend)
    zsre_mend["alt"] = ""
    with pytest.raises(DataError, match=r"zsre\.json: record 1 has an empty 'alt' \(the new target\)"):
        parse([good, zsre_mend])
    assert len(parse([good, zsre_mend], drop_empty_targets=True)) == 1


def test_mend_missing_field(zsre_mend):
    good = dict(zsre_mend)
    del zsre_mend["loc_ans"]
    with pytest.raises(DataError, match=r"record 1 lacks 'loc_ans'; expected zsRE MEND format"):
        parse([good, zsre_mend])


def test_knowedit_record(knowedit):
    (case,) = parse([knowedit])
    req = case.request
    assert req.prompt == wrap("Which family does {} belong to?")
    assert (req.subject, req.target_new, req.target_true) == ("Epaspidoceras", "Noctuidae", "Aspidoceratidae")
    assert case.paraphrases == (wrap("What family are Epaspidoceras?"),)
    # relation-specificity prompts are cloze statements and stay unwrapped
    assert [(p.prompt, p.answers) for p in case.neighbourhood] == [
        ("The taxon rank of Epaspidoceras is", ("genus",)),
        ("Epaspidoceras taxon rank", ("genus", "Genus")),
    ]
    assert case.extra["neighbourhood_kinds"] == ("Relation_Specificity", "Relation_Specificity")
    (port,) = case.portability
    assert port.prompt == wrap("What is the common name for the family Epaspidoceras belongs to?")
    assert port.answers == ("Owlet moths",) and case.extra["portability_kinds"] == ("Reasoning",)


def test_knowedit_nested_missing_field(knowedit):
    del knowedit["portability"]["Reasoning"][0]["ground_truth"]
    with pytest.raises(DataError, match=r"record 0 lacks 'portability\.Reasoning\[0\]\.ground_truth'; expected KnowEdit"):
        parse([knowedit])


# --- shipped files -------------------------------------------------------------------------

def test_default_zsre_suite_combines_both_files_and_drops_empty_targets():
    eval_raw = read_records(shipped_path("zsre_mend_eval_portability_gpt4.json"))
    train_raw = read_records(shipped_path("zsre_mend_train_1k.json"))
    cases = load_cases("zsre")
    empty = [r for r in train_raw if not r["alt"].strip()]
    assert len(empty) == 2
    assert len(cases) == len(eval_raw) + len(train_raw) - len(empty) == 2035
    assert sum(bool(c.portability) for c in cases) == 1037  # only the eval file has portability
    assert len({c.case_id for c in cases}) == len(cases)
    assert all(c.request.text == wrap(c.extra["question"]) for c in cases)
    assert sum(not c.extra["subject_in_prompt"] for c in cases) == 0  # every shipped question names its subject


def test_user_copy_of_defective_file_is_strict(write_json):
    records = read_records(shipped_path("zsre_mend_train_1k.json"))
    path = write_json("train.json", records)
    with pytest.raises(DataError, match=r"train\.json: record \d+ has an empty 'alt'"):
        load_cases("zsre", path)


def test_zsre_suite_deduplicates_questions(write_json, zsre_mend):
    twin = dict(zsre_mend, alt="cars", src="  what is the product made by  UniFirst? ")
    path = write_json("dups.json", [zsre_mend, twin, dict(zsre_mend, src="Who founded UniFirst?")])
    cases = load_cases("zsre", path)
    assert [c.case_id for c in cases] == ["dups:0", "dups:2"]
    assert cases[0].target_new == "unmanned aircraft"  # the first occurrence wins


def test_knowedit_suite_counts():
    cases = load_cases("zsre-knowedit")
    assert len(cases) == 1304
    kinds = [c.extra["portability_kinds"] for c in cases]
    assert sum(k == ("Reasoning",) for k in kinds) == 771
    assert sum(k == ("Logical_Generalization",) for k in kinds) == 269
    assert sum(k == ("Subject_Aliasing",) for k in kinds) == 264
    assert all(len(c.neighbourhood) == 2 for c in cases)
    assert sum(not c.extra["subject_in_prompt"] for c in cases) == 0


def test_zsre_all_suite_is_every_shipped_question_once():
    cases = load_cases("zsre-all")
    mend, knowedit = load_cases("zsre"), load_cases("zsre-knowedit")
    keys = [question_key(c) for c in cases]
    assert len(set(keys)) == len(keys) == len({question_key(c) for c in mend + knowedit}) == 2548
    assert [c.case_id for c in cases[: len(mend)]] == [c.case_id for c in mend]  # the MEND files come first and win
    assert len({c.case_id for c in cases}) == len(cases)
