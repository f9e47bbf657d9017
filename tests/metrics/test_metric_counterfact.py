import math

import pytest

import kebench.metrics.counterfact as cf
from kebench.data.case import EditCase, EditRequest, Probe
from kebench.errors import DataError
from kebench.scoring import score_targets


def test_rewrite_success_and_magnitude_by_hand():
    pairs = [(1.0, 2.0), (3.0, 2.0)]  # (nll_new, nll_true): first prefers new, second true
    assert cf.rewrite_success(pairs) == 0.5
    want = ((math.exp(-1) - math.exp(-2)) + (math.exp(-3) - math.exp(-2))) / 2
    assert cf.rewrite_magnitude(pairs) == pytest.approx(want)
    assert cf.neighbourhood_success(pairs) == 0.5
    assert cf.neighbourhood_magnitude(pairs) == pytest.approx(-want)
    assert cf.rewrite_success([(2.0, 2.0)]) == 0.0 and cf.neighbourhood_success([(2.0, 2.0)]) == 0.0  # ties fail


def test_record_fields_and_absent_probe_kinds():
    record = cf.counterfact_record("7", [(0.5, 1.0)], [], [(1.0, 0.5), (0.6, 0.4)], ["a b a b"])
    assert record["case_id"] == "7"
    assert record["efficacy_success"] == 1.0
    assert record["neighbourhood_success"] == 1.0
    assert "paraphrase_success" not in record
    assert record["ngram_entropy"] > 0 and record["generations"] == ["a b a b"]
    assert record["nll"]["neighbourhood"] == [[1.0, 0.5], [0.6, 0.4]]


def _case(cid: str, subject: str, new: str, true: str) -> EditCase:
    return EditCase(
        case_id=cid,
        suite="counterfact",
        requests=(EditRequest("The capital of {} is", subject, new, true, cid),),
        paraphrases=(f"Where is the government of {subject}? It is in", f"{subject}'s capital city is"),
        neighbourhood=(Probe("The capital of Germany is", ("Berlin",)), Probe("Madrid is the capital of", ("Spain",))),
        generation_prompts=(f"{subject} is known for",),
    )


CASES = [_case("1", "France", "Rome", "Paris"), _case("2", "Italy", "Paris", "Rome")]


def test_evaluate_matches_direct_scores_in_one_batched_call(tiny_lm, count_calls):
    scorer = count_calls(cf, "score_targets")
    generator = count_calls(cf, "greedy_generate")
    records = cf.counterfact_evaluate(tiny_lm, CASES, batch_size=4, generation_tokens=5)
    assert scorer.calls == 1 and generator.calls == 1
    assert [r["case_id"] for r in records] == ["1", "2"]
    new, true = score_targets(tiny_lm, ["The capital of France is"] * 2, ["Rome", "Paris"])
    assert records[0]["nll"]["rewrite"] == [[pytest.approx(new.nll, abs=1e-4), pytest.approx(true.nll, abs=1e-4)]]
    assert records[0]["efficacy_success"] == float(new.nll < true.nll)
    b_new, b_true = score_targets(tiny_lm, ["The capital of Germany is"] * 2, ["Rome", "Berlin"])
    assert records[0]["nll"]["neighbourhood"][0] == [
        pytest.approx(b_new.nll, abs=1e-4), pytest.approx(b_true.nll, abs=1e-4)
    ]
    assert records[0]["generations"][0].startswith("France is known for")
    assert len(records[0]["nll"]["paraphrase"]) == 2


def test_an_edit_that_forces_the_new_target_wins_efficacy_and_loses_neighbourhood(tiny_lm, push_word):
    (record,) = cf.counterfact_evaluate(tiny_lm, CASES[:1], push_word("Rome"), generation_tokens=4)
    assert record["efficacy_success"] == 1.0 and record["paraphrase_success"] == 1.0
    assert record["efficacy_magnitude"] > 0.9
    assert record["neighbourhood_success"] == 0.0 and record["neighbourhood_magnitude"] < -0.9
    assert record["generations"] == ["France is known for Rome Rome Rome Rome"]
    assert record["ngram_entropy"] < cf.mean_ngram_entropy(["France is known for a b c d"])


def test_missing_true_target_raises(tiny_lm):
    case = EditCase("9", "counterfact", (EditRequest("The capital of {} is", "France", "Rome", None, "9"),))
    with pytest.raises(DataError, match="target_true"):
        cf.counterfact_evaluate(tiny_lm, [case], generation_tokens=0)


def test_neighbourhood_kept_counts_preferences_the_edit_changed():
    from kebench.metrics.counterfact import neighbourhood_kept

    def rec(cid, pairs):
        return {"case_id": cid, "nll": {"neighbourhood": pairs}}

    pre = [rec("a", [[2.0, 1.0], [1.0, 2.0]]), rec("b", [[3.0, 1.0]])]  # (nll_new, nll_true)
    post = [rec("a", [[0.5, 1.0], [1.0, 2.5]]), rec("b", [[2.0, 1.5]])]  # the first prompt flipped
    assert neighbourhood_kept(pre, post) == {"neighbourhood_kept": 2 / 3}
    assert neighbourhood_kept(pre, pre) == {"neighbourhood_kept": 1.0}
    assert neighbourhood_kept([rec("a", [])], [rec("a", [])]) == {}
    with pytest.raises(ValueError, match="out of order"):
        neighbourhood_kept(pre, post[::-1])
