import contextlib
import copy

import pytest
import torch

import kebench.metrics.zsre as zsre
from kebench.data.case import EditCase, EditRequest, Probe
from kebench.errors import ConfigError, DataError
from kebench.models.loaded import LoadedModel
from kebench.scoring import encode_target, score_targets
from kebench.suites import get_suite
from kebench.tokens import encode_prompt


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


def _without_template(lm: LoadedModel) -> LoadedModel:
    tok = copy.deepcopy(lm.tokenizer)
    tok.chat_template = None
    return LoadedModel(lm.model, tok, lm.name, lm.weights_sha256)


@pytest.fixture
def generate_inputs(tiny_lm, monkeypatch):
    """The input ids and output widths of every model.generate call."""
    seen: list[tuple[torch.Tensor, int]] = []
    original = tiny_lm.model.generate

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append((kwargs["input_ids"].cpu(), out.shape[1]))
        return out

    monkeypatch.setattr(tiny_lm.model, "generate", spy)
    return seen


def test_unedited_model_keeps_locality_and_scores_like_score_targets(tiny_lm, count_calls):
    refs = zsre.zsre_reference(tiny_lm, CASES, batch_size=3, max_new_tokens=4)
    assert [r["case_id"] for r in refs] == ["a", "b"]
    assert [e["answer"] for e in refs[0]["locality"]] == ["William Shakespeare", "Bob"]
    scorer, generator = count_calls(zsre, "score_targets"), count_calls(zsre, "generate_answers")
    records = zsre.zsre_evaluate(tiny_lm, CASES, refs, batch_size=3, max_new_tokens=4)
    assert scorer.calls == 1 and generator.calls == 1
    for record in records:
        assert record["locality_tf"] == 1.0 and record["locality_em"] == 1.0
        assert record["prompt_format"] == "chat-template"  # the SmolLM2 tokenizer has one
    (direct,) = score_targets(tiny_lm, ["What is the capital of France?"], ["Paris"])
    assert records[0]["reliability_tf"] == direct.accuracy  # teacher forcing reads the bare prompt
    assert "portability_tf" in records[0] and "portability_tf" not in records[1]
    assert "locality_contains" not in records[0] and "reliability_contains" in records[0]
    assert set(records[0]["generations"]) == {"reliability", "generality", "locality", "portability"}


def test_forced_answer_counts_for_tf_and_contains_but_not_em_and_breaks_locality(tiny_lm, push_word):
    refs = {r["case_id"]: r for r in zsre.zsre_reference(tiny_lm, CASES, max_new_tokens=3)}
    (record,) = zsre.zsre_evaluate(tiny_lm, CASES[:1], refs, push_word("Paris"), max_new_tokens=3)
    assert record["reliability_tf"] == 1.0 and record["generality_tf"] == 1.0
    assert record["generations"]["reliability"] == ["Paris Paris Paris"]
    assert record["reliability_contains"] == 1.0 and record["reliability_em"] == 0.0
    assert record["locality_em"] == 0.0 and record["locality_tf"] < 1.0
    assert record["portability_tf"] == 0.0  # "Italy" is never the argmax when Paris is forced


def test_multi_token_target_accuracy_is_fraction_of_tokens(tiny_lm, push_word):
    refs = zsre.zsre_reference(tiny_lm, CASES[1:], max_new_tokens=2)
    (record,) = zsre.zsre_evaluate(tiny_lm, CASES[1:], refs, push_word("Rome"), max_new_tokens=2)
    (score,) = score_targets(tiny_lm, ["What is the capital of Spain?"], ["Rome and Milan"], condition=push_word("Rome"))
    assert len(score.token_correct) == 3 and score.token_correct[0]
    assert record["reliability_tf"] == pytest.approx(score.accuracy)
    assert 0 < record["reliability_tf"] < 1


def test_references_must_match_the_cases_and_the_prompt_format(tiny_lm):
    refs = zsre.zsre_reference(tiny_lm, CASES[:1], max_new_tokens=2)
    with pytest.raises(DataError, match="no locality reference"):
        zsre.zsre_evaluate(tiny_lm, CASES, refs, max_new_tokens=2)
    other = [dict(refs[0], case_id="b")]
    with pytest.raises(DataError, match="other probes"):
        zsre.zsre_evaluate(tiny_lm, CASES[1:], other, max_new_tokens=2)
    with pytest.raises(DataError, match="prompt format"):
        zsre.zsre_evaluate(tiny_lm, CASES[:1], refs, max_new_tokens=2, chat_template=False)
    legacy = [{k: v for k, v in refs[0].items() if k != "prompt_format"}]  # cached before prompt formats
    with pytest.raises(DataError, match="unrecorded"):
        zsre.zsre_evaluate(tiny_lm, CASES[:1], legacy, max_new_tokens=2)


def test_chat_template_wraps_the_prompt_as_the_user_turn_where_the_tokenizer_has_one(tiny_lm, generate_inputs):
    tok, prompt = tiny_lm.tokenizer, "Answer the following question in less than 5 words: Who wrote Hamlet?\nAnswer:"
    assert zsre.prompt_format(tok) == "chat-template"
    zsre.generate_answers(tiny_lm, [prompt], "chat-template", max_new_tokens=2)
    (ids, _), = generate_inputs
    text = tok.decode(ids[0])
    assert text.endswith(f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
    assert text.count("<|im_start|>") == 3  # system (the template's default), user, assistant: no extra special tokens

    plain = _without_template(tiny_lm)
    assert zsre.prompt_format(plain.tokenizer) == "plain"
    zsre.generate_answers(plain, [prompt], zsre.prompt_format(plain.tokenizer), max_new_tokens=2)
    assert generate_inputs[1][0][0].tolist() == encode_prompt(tok, prompt)
    refs = zsre.zsre_reference(plain, CASES[:1], max_new_tokens=2)
    (record,) = zsre.zsre_evaluate(plain, CASES[:1], refs, max_new_tokens=2)
    assert refs[0]["prompt_format"] == record["prompt_format"] == "plain"


def test_chat_template_setting(tiny_lm, monkeypatch):
    monkeypatch.setenv(zsre.CHAT_TEMPLATE_ENV, "0")
    assert zsre.prompt_format(tiny_lm.tokenizer) == "plain"
    assert zsre.prompt_format(tiny_lm.tokenizer, chat_template=True) == "chat-template"
    monkeypatch.setenv(zsre.CHAT_TEMPLATE_ENV, "1")
    assert zsre.prompt_format(tiny_lm.tokenizer) == "chat-template"
    monkeypatch.setenv(zsre.CHAT_TEMPLATE_ENV, "maybe")
    with pytest.raises(ConfigError, match=zsre.CHAT_TEMPLATE_ENV):
        zsre.prompt_format(tiny_lm.tokenizer)


def test_generation_stops_at_the_end_of_the_answer_line(tiny_lm, generate_inputs):
    """An answer, then a newline, then more text: each row stops after the newline and keeps the answer."""
    (paris,) = encode_target(tiny_lm.tokenizer, "Paris")
    (newline,) = tiny_lm.tokenizer("\n", add_special_tokens=False)["input_ids"]
    steps = []

    @contextlib.contextmanager
    def answer_then_newline(prompts):
        def bias(_module, _args, out):
            out = out.clone()
            out[..., paris if not steps else newline] += 100.0
            steps.append(1)
            return out

        handle = tiny_lm.model.lm_head.register_forward_hook(bias)
        try:
            yield
        finally:
            handle.remove()

    got = zsre.generate_answers(tiny_lm, ["Who?", "Where?"], "chat-template", max_new_tokens=10, condition=answer_then_newline)
    assert got == ["Paris", "Paris"]
    (ids, width), = generate_inputs
    assert width == ids.shape[1] + 2  # " Paris", "\n", then stopped


def test_locality_compares_the_answer_line_not_the_continuation(tiny_lm, monkeypatch):
    case = CASES[0]
    answers = iter([
        ["William Shakespeare.", "Bob"],  # the reference: the unedited model's locality answers
        ["Paris", "Paris", "william shakespeare\nHe also wrote Macbeth", "The Bob!", "Italy"],  # edited, kept
        ["Paris", "Paris", "Christopher Marlowe", "Bob", "Italy"],  # edited, one answer changed
    ])
    monkeypatch.setattr(zsre, "generate_answers", lambda *a, **k: next(answers))
    refs = zsre.zsre_reference(tiny_lm, [case])
    (kept,) = zsre.zsre_evaluate(tiny_lm, [case], refs)
    assert kept["locality_em"] == 1.0
    assert kept["reliability_em"] == kept["reliability_contains"] == kept["portability_contains"] == 1.0
    (changed,) = zsre.zsre_evaluate(tiny_lm, [case], refs)
    assert changed["locality_em"] == 0.5


def test_aggregate_scores_and_records_the_prompt_format(tiny_lm):
    suite = get_suite("zsre")
    refs = zsre.zsre_reference(tiny_lm, CASES, max_new_tokens=2)
    records = zsre.zsre_evaluate(tiny_lm, CASES, refs, max_new_tokens=2)
    summary = suite.aggregate(records)
    assert summary["chat_template"] == 1.0
    assert {"score", "score_tf", "score_em", "score_contains"} <= set(summary)
    assert all(m in summary for m in suite.headline)
    plain = zsre.zsre_evaluate(tiny_lm, CASES[:1], refs[:1], max_new_tokens=2, chat_template=True)
    plain[0]["prompt_format"] = "plain"
    with pytest.raises(DataError, match="mix prompt formats"):
        suite.aggregate([plain[0], records[1]])
