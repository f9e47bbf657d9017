"""MeG's query encoder: pooling, contrastive tuning of the last layer only, cached heads."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from kebench.models.load import default_encoder_path
from editors.meg.encoder import ContrastiveSettings, QueryEncoder, _resolve_pooling, tune_contrastive, tuned_encoder


def tiny_encoder(seed: int = 0) -> QueryEncoder:
    """A random 2-layer BERT (d=32) with the real MiniLM WordPiece tokenizer."""
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return QueryEncoder(BertModel(cfg), tok, pooling="mean", name=f"tiny-bert-{seed}")


SUBJECTS = ["Paris", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Accra", "Hanoi", "Minsk", "Sofia"]
PAIRS = [(f"{s} is the capital of", f"Which country has {s} as its capital city? It is") for s in SUBJECTS]


def test_encode_is_normalised_and_batch_independent():
    enc = tiny_encoder()
    texts = ["a short one", "a much longer sentence about the Eiffel Tower in Paris", "x"]
    emb = enc.encode(texts)
    assert emb.shape == (3, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(enc.encode(texts[1:2])[0], emb[1], atol=1e-5)


def test_encode_with_a_label_counts_the_texts(monkeypatch, capsys):
    from kebench import progress

    monkeypatch.setattr(progress, "_enabled", True)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    enc = tiny_encoder()
    quiet = enc.encode(["a", "bb", "ccc"], batch_size=2)
    assert capsys.readouterr().err == ""  # no label, no bar
    shown = enc.encode(["a", "bb", "ccc"], batch_size=2, label="MeG: encoding conditions")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("MeG: encoding conditions: 0/3") and "2/3" in lines[1]
    assert lines[-1].endswith("done") and "3/3 (100%)" in lines[-1]
    assert torch.equal(quiet, shown)


def test_pooling_auto_reads_sentence_transformers_config(tmp_path):
    assert _resolve_pooling(str(default_encoder_path()), "auto") == "mean"
    assert _resolve_pooling(str(tmp_path), "auto") == "cls"  # plain BERT folder: [CLS], as in the paper


def test_contrastive_tuning_changes_only_the_last_layer_and_lowers_the_loss():
    enc = tiny_encoder()
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    stats = tune_contrastive(enc, PAIRS, ContrastiveSettings(steps=30, batch_size=8, lr=3e-3, temperature=0.1, heldout=2))
    after = enc.model.state_dict()
    last = len(enc.layers) - 1
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(f"layer.{last}." in k for k in changed)
    assert stats["encoder_loss_last"] < stats["encoder_loss_first"]
    assert all(not p.requires_grad for p in enc.model.parameters())


def test_tuned_head_is_cached_by_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path))
    settings = ContrastiveSettings(steps=3, batch_size=4, lr=1e-3, heldout=0)
    first = tiny_encoder()
    s1 = tuned_encoder(first, PAIRS, settings)
    second = tiny_encoder()
    s2 = tuned_encoder(second, PAIRS, settings)
    assert s1["encoder_cache_hit"] == 0.0 and s2["encoder_cache_hit"] == 1.0
    for k, v in first.head_state().items():
        assert torch.equal(v, second.head_state()[k])
    third = tiny_encoder()
    other = ContrastiveSettings(steps=3, batch_size=4, lr=2e-3, heldout=0)
    assert tuned_encoder(third, PAIRS, other)["encoder_cache_hit"] == 0.0


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_modes(pooling):
    enc = tiny_encoder()
    enc.pooling = pooling
    assert enc.encode(["hello world"]).shape == (1, 32)
