"""Fixtures shared by the editor tests."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from kebench.models.load import default_encoder_path


@pytest.fixture
def one_thread():
    """Small nets on a shared CPU: intra-op threading only adds overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A random 2-layer BERT (d=32) saved with the real MiniLM tokenizer."""
    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
