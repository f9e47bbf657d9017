import pytest

import kebench.metrics.mquake as mq
from kebench.data.case import EditCase, EditRequest, Probe
from kebench.errors import DataError


def test_record_by_hand():
    record = mq.mquake_record(
        "c1",
        edit_generations=[" Paris is nice", " no idea"],
        new_targets=["Paris", "Berlin"],
        true_targets=["Rome", "Madrid"],
        question_generations=[" I think it is London.", " Berlin"],
        new_answers=[("London", "UK"), ("London", "UK")],
        original_answers=("Berlin", "Deutschland"),
    )
    assert record["edit_accuracy"] == 0.5 and record["edit_accuracy_original"] == 0.0
    assert record["multihop_accuracy"] == 1.0 and record["multihop_question_accuracy"] == 0.5
    assert record["multihop_accuracy_original"] == 1.0 and record["multihop_question_accuracy_original"] == 0.5
    assert record["generations"]["questions"][1] == " Berlin"


def test_record_without_questions_has_no_multihop_fields():
    record = mq.mquake_record("c", [" Rome"], ["Paris"], ["Rome"], [], [], ("x",))
    assert record["edit_accuracy"] == 0.0 and record["edit_accuracy_original"] == 1.0
    assert not any(k.startswith("multihop") for k in record)


def _case(extra=None) -> EditCase:
    return EditCase(
        case_id="m1",
        suite="mquake",
        requests=(
            EditRequest("The capital of {} is", "France", "Paris", "Rome", "m1"),
            EditRequest("{} is a citizen of", "Bob", "Germany", "France", "m1"),
        ),
        portability=(
            Probe("What is the capital of the country Bob is a citizen of?", ("Paris", "City of Light")),
            Probe("Bob is a citizen of a country whose capital is", ("Paris",)),
        ),
        extra={"answer": "Rome", "answer_alias": ["Roma"]} if extra is None else extra,
    )


def test_evaluate_in_one_call_and_forced_answer_matches(tiny_lm, push_word, count_calls):
    generator = count_calls(mq, "greedy_generate")
    (record,) = mq.mquake_evaluate(tiny_lm, [_case()], push_word("Paris"), max_new_tokens=3)
    assert generator.calls == 1
    assert record["case_id"] == "m1"
    assert record["edit_accuracy"] == 0.5  # the France edit generates Paris, the Bob edit wanted Germany
    assert record["multihop_accuracy"] == 1.0 and record["multihop_question_accuracy"] == 1.0
    assert record["multihop_accuracy_original"] == 0.0
    assert len(record["generations"]["edits"]) == 2 and len(record["generations"]["questions"]) == 2


def test_missing_original_answer_raises(tiny_lm):
    with pytest.raises(DataError, match="answer"):
        mq.mquake_evaluate(tiny_lm, [_case(extra={})], max_new_tokens=2)
