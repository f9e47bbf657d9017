import pytest

import kebench.metrics.zsre as zsre
from kebench.data.case import EditCase, EditRequest, Probe
from kebench.errors import DataError
from kebench.scoring import score_targets


def test_token_agreement():
    assert zsre.token_agreement([1, 2, 3], [1, 2, 4]) == pytest.approx(2 / 3)
    with pytest.raises(DataError):
        zsre.token_agreement([1, 2], [1, 2, 3])


def _case(cid: str, subject: str, new: str, portability: bool = True) -> EditCase:
    return EditCase(
        case_id=cid,
        suite="zsre",
        requests=(EditRequest("What is the capital of {}?", subject, new, None, cid),),
        paraphrases=(f"Which city is the capital of {subject}?",),
        neighbourhood=(Probe("nq question: who wrote hamlet", ("William Shakespeare",)), Probe(f"Who is the king of {subject}?", ("Bob",))),
        portability=(Probe(f"In which country is the capital of {subject}?", ("Italy", "Italia")),) if portability else (),
    )


CASES = [_case("a", "France", "Paris"), _case("b", "Spain", "Rome and Milan", portability=False)]


def test_unedited_model_keeps_locality_and_scores_like_score_targets(tiny_lm, count_calls):
    refs = zsre.zsre_reference(tiny_lm, CASES, batch_size=3, max_new_tokens=4)
    assert [r["case_id"] for r in refs] == ["a", "b"]
    assert [e["answer"] for e in refs[0]["locality"]] == ["William Shakespeare", "Bob"]
    scorer, generator = count_calls(zsre, "score_targets"), count_calls(zsre, "greedy_generate")
    records = zsre.zsre_evaluate(tiny_lm, CASES, refs, batch_size=3, max_new_tokens=4)
    assert scorer.calls == 1 and generator.calls == 1
    for record in records:
        assert record["locality_tf"] == 1.0 and record["locality_em"] == 1.0
    (direct,) = score_targets(tiny_lm, ["What is the capital of France?"], ["Paris"])
    assert records[0]["reliability_tf"] == direct.accuracy
    assert "portability_tf" in records[0] and "portability_tf" not in records[1]
    assert "locality_prefix" not in records[0]
    assert set(records[0]["generations"]) == {"reliability", "generality", "locality", "portability"}


def test_forced_answer_counts_for_tf_and_prefix_but_not_em_and_breaks_locality(tiny_lm, push_word):
    refs = {r["case_id"]: r for r in zsre.zsre_reference(tiny_lm, CASES, max_new_tokens=3)}
    (record,) = zsre.zsre_evaluate(tiny_lm, CASES[:1], refs, push_word("Paris"), max_new_tokens=3)
    assert record["reliability_tf"] == 1.0 and record["generality_tf"] == 1.0
    assert record["generations"]["reliability"] == [" Paris Paris Paris"]
    assert record["reliability_prefix"] == 1.0 and record["reliability_em"] == 0.0
    assert record["locality_em"] == 0.0 and record["locality_tf"] < 1.0
    assert record["portability_tf"] == 0.0  # "Italy" is never the argmax when Paris is forced


def test_multi_token_target_accuracy_is_fraction_of_tokens(tiny_lm, push_word):
    refs = zsre.zsre_reference(tiny_lm, CASES[1:], max_new_tokens=2)
    (record,) = zsre.zsre_evaluate(tiny_lm, CASES[1:], refs, push_word("Rome"), max_new_tokens=2)
    (score,) = score_targets(tiny_lm, ["What is the capital of Spain?"], ["Rome and Milan"], condition=push_word("Rome"))
    assert len(score.token_correct) == 3 and score.token_correct[0]
    assert record["reliability_tf"] == pytest.approx(score.accuracy)
    assert 0 < record["reliability_tf"] < 1


def test_references_must_match_the_cases(tiny_lm):
    refs = zsre.zsre_reference(tiny_lm, CASES[:1], max_new_tokens=2)
    with pytest.raises(DataError, match="no locality reference"):
        zsre.zsre_evaluate(tiny_lm, CASES, refs, max_new_tokens=2)
    other = [dict(refs[0], case_id="b")]
    with pytest.raises(DataError, match="other probes"):
        zsre.zsre_evaluate(tiny_lm, CASES[1:], other, max_new_tokens=2)
