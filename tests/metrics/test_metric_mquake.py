from pathlib import Path

import pytest

import kebench.metrics.mquake as mq
from kebench.compare import NOT_MEASURABLE_MARK, NOT_MEASURABLE_NOTE, ResultSummary, comparison_tables, markdown_tables
from kebench.data.case import EditCase, EditRequest, Probe
from kebench.data.mquake import multihop_prompt
from kebench.errors import DataError


def test_record_by_hand():
    record = mq.mquake_record(
        "c1",
        edit_generations=[" Paris is nice", " no idea"],
        new_targets=["Paris", "Berlin"],
        true_targets=["Rome", "Madrid"],
        question_generations=[" the U.K.", " Berlin"],
        new_answers=[("London", "UK"), ("London", "UK")],
        original_answers=("Berlin", "Deutschland"),
    )
    assert record["edit_accuracy"] == 0.5 and record["edit_accuracy_original"] == 0.0
    # an alias hit after SQuAD normalisation ("the U.K." -> "uk")
    assert record["multihop_accuracy"] == 1.0 and record["multihop_question_accuracy"] == 0.5
    assert record["multihop_accuracy_original"] == 1.0 and record["multihop_question_accuracy_original"] == 0.5
    assert record["generations"]["questions"][1] == " Berlin"
    assert record["protocol"] == mq.PROTOCOL


def _multihop(generation: str, answers: tuple[str, ...]) -> float:
    return mq.mquake_record("c", [" x"], ["y"], ["z"], [generation], [answers], ("Old",))["multihop_accuracy"]


def test_multihop_is_exact_match_of_answer_or_alias():
    assert _multihop(" Spanish", ("Spanish", "es")) == 1.0  # the answer
    assert _multihop(" ES.", ("Spanish", "es")) == 1.0  # an alias, normalised
    assert _multihop(" Spanish\nQ: What is", ("Spanish",)) == 1.0  # only the answer line counts
    # the old rule (answer as a word anywhere in the first line) counted this as a hit
    assert _multihop(" The answer to this question is available in Spanish.", ("Spanish", "es")) == 0.0
    assert _multihop(" Spanish language", ("Spanish",)) == 0.0


def test_multihop_prompt_is_few_shot_q_a():
    prompt = multihop_prompt(" Who is the spouse of the head of state of Freedonia? ")
    lines = prompt.split("\n")
    assert len(lines) >= 5  # a handful of demonstrations, then the question
    for line in lines[:-1]:
        q, a = line.split(" A: ")
        assert q.startswith("Q: ") and q.endswith("?") and a and a == a.strip()
    assert lines[-1] == "Q: Who is the spouse of the head of state of Freedonia? A:"


def test_edit_accuracy_needs_the_object_first():
    edits = [" Moscow.", " German, and the official language of the EU is English.", "\n the United States", " A"]
    new, true = ["Moscow", "English", "United States", "A"], ["x", "German", "USA", "B"]
    record = mq.mquake_record("c", edits, new, true, [], [], ("x",))
    assert record["edit_accuracy"] == 1.0 - 1 / 4  # English is named, but after the model's answer
    assert record["edit_accuracy_original"] == 1 / 4  # German


def test_record_without_questions_has_no_multihop_fields():
    record = mq.mquake_record("c", [" Rome"], ["Paris"], ["Rome"], [], [], ("x",))
    assert record["edit_accuracy"] == 0.0 and record["edit_accuracy_original"] == 1.0
    assert not any(k.startswith("multihop") for k in record)


QUESTIONS = ("What is the capital of the country Bob is a citizen of?", "Bob is a citizen of a country with which capital?")


def _case(extra=None) -> EditCase:
    return EditCase(
        case_id="m1",
        suite="mquake",
        requests=(
            EditRequest("The capital of {} is", "France", "Paris", "Rome", "m1"),
            EditRequest("{} is a citizen of", "Bob", "Germany", "France", "m1"),
        ),
        portability=(
            Probe(multihop_prompt("What is the capital of the country Bob is a citizen of?"), ("Paris", "City of Light")),
            Probe(multihop_prompt("Bob is a citizen of a country with which capital?"), ("Paris",)),
        ),
        extra={"answer": "Rome", "answer_alias": ["Roma"], "questions": QUESTIONS} if extra is None else extra,
    )


def test_evaluate_and_forced_answer_matches(tiny_lm, push_word, count_calls):
    generator = count_calls(mq, "greedy_generate")
    lines = count_calls(mq, "answer_lines")
    # one new token: the forced model says " Paris" (with more, "Paris Paris", which is not the answer)
    (record,) = mq.mquake_evaluate(tiny_lm, [_case()], push_word("Paris"), max_new_tokens=1)
    # one batched generation for the cloze prompts, one (inside answer_lines) for the few-shot questions
    assert generator.calls == 2 and lines.calls == 1
    assert record["case_id"] == "m1"
    assert record["edit_accuracy"] == 0.5  # the France edit generates Paris, the Bob edit wanted Germany
    assert record["multihop_accuracy"] == 1.0 and record["multihop_question_accuracy"] == 1.0
    assert record["multihop_accuracy_original"] == 0.0
    assert len(record["generations"]["edits"]) == 2 and len(record["generations"]["questions"]) == 2


def test_missing_original_answer_raises(tiny_lm):
    with pytest.raises(DataError, match="answer"):
        mq.mquake_evaluate(tiny_lm, [_case(extra={})], max_new_tokens=2)


def test_condition_sees_the_questions_not_the_demonstrations(tiny_lm):
    import contextlib

    seen = []

    def condition(prompts):
        seen.extend(prompts)
        return contextlib.nullcontext()

    mq.answer_lines(tiny_lm, [p.prompt for p in _case().portability], QUESTIONS, max_new_tokens=2, condition=condition)
    assert sorted(seen) == sorted(QUESTIONS)


def _mquake_summary(pre_original: float) -> ResultSummary:
    pre = {"edit_accuracy": 0.1, "multihop_accuracy": 0.0, "multihop_accuracy_original": pre_original}
    post = {"edit_accuracy": 0.9, "multihop_accuracy": 0.2, "multihop_accuracy_original": 0.0}
    return ResultSummary(Path("r.json"), "memit", "mquake", 50, "batch", "default", 0, pre=pre, post=post,
                         seconds_per_edit=1.0, total_seconds=10.0)


def test_compare_marks_multihop_not_measurable_below_ten_percent():
    ((_, header, rows),) = comparison_tables([_mquake_summary(0.018)])
    row = dict(zip(header, rows[0]))
    assert row["multihop_accuracy"] == NOT_MEASURABLE_MARK and row["edit_accuracy"] != NOT_MEASURABLE_MARK
    assert NOT_MEASURABLE_NOTE in markdown_tables(comparison_tables([_mquake_summary(0.018)]))
    ((_, header, rows),) = comparison_tables([_mquake_summary(0.25)])
    assert dict(zip(header, rows[0]))["multihop_accuracy"].startswith("20.0")
    assert NOT_MEASURABLE_NOTE not in markdown_tables(comparison_tables([_mquake_summary(0.25)]))
