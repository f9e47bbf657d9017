"""Fixtures for metric tests: the real (small) tokenizer, a tiny random LLaMA, and a
condition that stands in for an edit by pushing one word's logit everywhere."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from kebench.models.loaded import LoadedModel
from kebench.scoring import encode_target

from tests.conftest import TOKENIZER_DIR as MODEL_DIR  # the tokenizer shipped in the package


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="session")
def tiny_lm(tokenizer) -> LoadedModel:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    return LoadedModel(LlamaForCausalLM(config).eval(), tokenizer, "tiny-llama", "0" * 64)


@pytest.fixture(scope="session")
def push_word(tiny_lm) -> Callable[[str], Callable[[Sequence[str]], contextlib.AbstractContextManager[None]]]:
    """push_word("Paris") -> a condition under which the model predicts " Paris" at every position."""

    def make(word: str):
        (token,) = encode_target(tiny_lm.tokenizer, word)

        @contextlib.contextmanager
        def condition(prompts: Sequence[str]) -> Iterator[None]:
            def bias(_module, _args, out):
                out = out.clone()
                out[..., token] += 100.0
                return out

            handle = tiny_lm.model.lm_head.register_forward_hook(bias)
            try:
                yield
            finally:
                handle.remove()

        return condition

    return make


class CallCounter:
    """Wraps a function to count calls (checks that a chunk is scored in one batched call)."""

    def __init__(self, fn: Callable) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.fixture
def count_calls(monkeypatch):
    def install(module, name: str) -> CallCounter:
        counter = CallCounter(getattr(module, name))
        monkeypatch.setattr(module, name, counter)
        return counter

    return install
