"""Shared fixtures: a tiny random LLaMA with the real SmolLM2 tokenizer, and the real default model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from kebench import progress
from kebench.models.loaded import LoadedModel, exact_checksum

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "kebench" / "models" / "files" / "smollm2-135m-instruct"

progress.set_enabled(False)


@pytest.fixture(scope="session")
def smol_tokenizer():
    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def make_tiny_llama(seed: int = 0, layers: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=2,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.requires_grad_(False)
    return model


@pytest.fixture
def tiny_lm(smol_tokenizer) -> LoadedModel:
    """A fresh tiny random LLaMA (4 layers, d=32, d_ff=64) with the real tokenizer."""
    model = make_tiny_llama()
    return LoadedModel(model, smol_tokenizer, "tiny-llama", exact_checksum(model), source="random")


@pytest.fixture(scope="session")
def real_lm() -> LoadedModel:
    """The embedded default model (SmolLM2-135M-Instruct); integration tests only."""
    from kebench.models.load import load_model

    return load_model(None)
