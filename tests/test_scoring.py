"""Batched scoring and generation must give each example exactly what it gets alone."""

from __future__ import annotations

import contextlib
import time

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from kebench.errors import DataError
from kebench.models.loaded import LoadedModel
from kebench.scoring import encode_prompt, encode_target, greedy_generate, score_targets

from tests.conftest import TOKENIZER_DIR as MODEL_DIR  # the tokenizer shipped in the package

PROMPTS = [
    "The capital of France is",
    "Hi",
    "Danielle Darrieux's mother tongue is",
    "A much longer prompt that talks about the history of the city and its many bridges, which is",
    "Who",
]
TARGETS = ["Paris", "there my friend", "French", "x", "is the president of the United States"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL_DIR)


def _tiny(arch: str, vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        )
        return LlamaForCausalLM(config).eval()
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=vocab, bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm(request, tokenizer) -> LoadedModel:
    return LoadedModel(_tiny(request.param, len(tokenizer)), tokenizer, f"tiny-{request.param}", "0" * 64)


def _reference_score(lm: LoadedModel, prompt: str, target: str) -> tuple[list[float], list[int]]:
    """Unpadded, full-vocabulary logits of one sequence, indexed by hand."""
    p, t = encode_prompt(lm.tokenizer, prompt), encode_target(lm.tokenizer, target)
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([p + t])).logits[0]
    logprobs = torch.log_softmax(logits.float(), -1)
    rows = [len(p) - 1 + k for k in range(len(t))]
    return [logprobs[r, t[k]].item() for k, r in enumerate(rows)], [int(logprobs[r].argmax()) for r in rows]


def test_score_targets_matches_unpadded_single_runs(lm):
    batched = score_targets(lm, PROMPTS, TARGETS, batch_size=3)
    assert len(batched) == len(PROMPTS)
    for prompt, target, got in zip(PROMPTS, TARGETS, batched):
        want_lp, want_pred = _reference_score(lm, prompt, target)
        assert got.token_logprobs == pytest.approx(want_lp, abs=1e-4)
        assert got.token_predicted == want_pred
        target_ids = encode_target(lm.tokenizer, target)
        assert got.token_correct == [p == t for p, t in zip(want_pred, target_ids)]
        assert got.nll == pytest.approx(-sum(want_lp) / len(want_lp), abs=1e-4)


def test_score_targets_same_for_every_batch_size(lm):
    one = score_targets(lm, PROMPTS, TARGETS, batch_size=1)
    for batch_size in (2, 32):
        many = score_targets(lm, PROMPTS, TARGETS, batch_size=batch_size)
        for a, b in zip(one, many):
            assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
            assert a.token_predicted == b.token_predicted


def _manual_greedy(lm: LoadedModel, prompt: str, steps: int) -> str:
    ids = encode_prompt(lm.tokenizer, prompt)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(lm.model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == lm.tokenizer.eos_token_id:
                break
            new.append(nxt)
    return lm.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_greedy_generate_left_padding_matches_single_runs(lm):
    batched = greedy_generate(lm, PROMPTS, max_new_tokens=6, batch_size=4)
    assert len(batched) == len(PROMPTS)
    assert batched == greedy_generate(lm, PROMPTS, max_new_tokens=6, batch_size=1)
    assert batched == [_manual_greedy(lm, p, 6) for p in PROMPTS]


def test_padding_side_of_the_tokenizer_is_left_alone(lm):
    lm.tokenizer.padding_side = "right"
    greedy_generate(lm, PROMPTS[:2], max_new_tokens=2)
    assert lm.tokenizer.padding_side == "right"


class _Recorder:
    """A condition that records each batch and checks the model only runs inside it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls: list[list[str]] = []
        self.active = False
        self.forwards_outside = 0
        model.register_forward_pre_hook(self._check)

    def _check(self, *_):
        if not self.active:
            self.forwards_outside += 1

    @contextlib.contextmanager
    def __call__(self, prompts):
        self.calls.append(list(prompts))
        self.active = True
        try:
            yield
        finally:
            self.active = False


@pytest.mark.parametrize("fn", ["score", "generate"])
def test_condition_is_entered_once_per_batch_with_its_prompts(tokenizer, fn):
    lm = LoadedModel(_tiny("llama", len(tokenizer)), tokenizer, "tiny", "0" * 64)
    rec = _Recorder(lm.model)
    if fn == "score":
        score_targets(lm, PROMPTS, TARGETS, batch_size=2, condition=rec)
    else:
        greedy_generate(lm, PROMPTS, max_new_tokens=3, batch_size=2, condition=rec)
    assert [len(c) for c in rec.calls] == [2, 2, 1]
    assert sorted(p for c in rec.calls for p in c) == sorted(PROMPTS)
    assert rec.forwards_outside == 0


def test_condition_changes_what_is_scored(tokenizer):
    """A condition that pushes one token's logit makes it the teacher-forced argmax, only while active."""
    lm = LoadedModel(_tiny("llama", len(tokenizer)), tokenizer, "tiny", "0" * 64)
    (paris,) = encode_target(tokenizer, "Paris")

    @contextlib.contextmanager
    def push_paris(prompts):
        def bias(_m, _a, out):
            out = out.clone()
            out[..., paris] += 100.0
            return out

        handle = lm.model.lm_head.register_forward_hook(bias)
        try:
            yield
        finally:
            handle.remove()

    before, = score_targets(lm, ["The capital of France is"], ["Paris"])
    after, = score_targets(lm, ["The capital of France is"], ["Paris"], condition=push_paris)
    again, = score_targets(lm, ["The capital of France is"], ["Paris"])
    assert not before.token_correct[0] and before.token_logprobs[0] < -5
    assert after.token_correct == [True] and after.token_logprobs[0] > -1e-3
    assert again.token_logprobs == pytest.approx(before.token_logprobs)
    assert greedy_generate(lm, ["Hi"], max_new_tokens=2, condition=push_paris) == [" Paris Paris"]


def test_bad_inputs_raise(lm):
    with pytest.raises(ValueError):
        score_targets(lm, PROMPTS, TARGETS[:2])
    with pytest.raises(DataError):
        score_targets(lm, ["The capital of France is"], ["  "])
    with pytest.raises(DataError):
        greedy_generate(lm, [""])
    assert score_targets(lm, [], []) == [] and greedy_generate(lm, []) == []


def load_default_model() -> LoadedModel:
    """The real default model: kebench's cached loader when present, else the GGUF directly."""
    try:
        from kebench.models.load import load_model  # type: ignore[import-not-found]
    except ImportError:
        from transformers import AutoModelForCausalLM

        tok = AutoTokenizer.from_pretrained(MODEL_DIR)
        model = AutoModelForCausalLM.from_pretrained(
            MODEL_DIR, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32
        ).eval()
        return LoadedModel(model, tok, "default", "unknown", source=str(MODEL_DIR))
    return load_model("default")


@pytest.mark.integration
def test_real_model_knows_paris():
    start = time.monotonic()
    lm = load_default_model()
    paris, rome = score_targets(lm, ["The capital of France is"] * 2, ["Paris", "Rome"])
    assert paris.nll < rome.nll
    assert paris.token_correct[0]
    (text,) = greedy_generate(lm, ["The capital of France is"], max_new_tokens=5)
    assert text.strip().startswith("Paris")
    assert time.monotonic() - start < 60


def test_scoring_runs_in_eval_mode_and_restores_training_flag(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, attention_dropout=0.5,
    )
    model = LlamaForCausalLM(config).train()  # as an editor that fine-tuned might leave it
    lm = LoadedModel(model, tokenizer, "tiny", "0" * 64)
    a = score_targets(lm, PROMPTS, TARGETS)
    b = score_targets(lm, PROMPTS, TARGETS)
    assert [s.token_logprobs for s in a] == [s.token_logprobs for s in b]  # no dropout noise
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_padding_keeps_tokens_and_masks_the_rest():
    from kebench.tokens import pad_left, pad_right

    ids, mask = pad_right([[5, 6, 7], [8]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_left([[5, 6, 7], [8]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
