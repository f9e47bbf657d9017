"""Key statistics: correct second moments, one pass for several layers, a cache that is never wrong."""

from __future__ import annotations

import torch

import kebench.stats as stats
from kebench.stats import cache_key, cache_path, layer_covariance, stats_dir, texts_sha256, token_chunks

CORPUS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Paris is the capital and most populous city of France, on the Seine.",
    "In 1905 Albert Einstein published four papers that changed physics.",
    "The violin is a wooden string instrument in the violin family.",
] * 6


def _direct_moment(lm, layer, chunks):
    """Reference: Σ k kᵀ / N from a full forward per window, keys read by a plain hook."""
    keys = []
    h = lm.adapter.mlp_out(layer).register_forward_pre_hook(lambda m, a: keys.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for c in chunks:
            lm.model(input_ids=torch.tensor([c]))
    h.remove()
    k = torch.cat(keys).double()
    return k.T @ k / k.shape[0]


def test_token_chunks_give_exactly_the_budget(smol_tokenizer):
    chunks = token_chunks(smol_tokenizer, CORPUS, n_tokens=203, seq_len=16)
    assert sum(len(c) for c in chunks) == 203
    assert all(len(c) <= 16 for c in chunks)
    # windows continue the stream without gaps or repeats
    stream = [t for c in chunks for t in c]
    assert stream[:10] == smol_tokenizer(CORPUS[0], add_special_tokens=False)["input_ids"][:10]


def test_covariance_matches_direct_computation_for_several_layers_in_one_pass(tiny_lm, tmp_path, monkeypatch):
    calls = []
    real = stats.compute_second_moments
    monkeypatch.setattr(stats, "compute_second_moments", lambda lm, layers, *a, **k: calls.append(list(layers)) or real(lm, layers, *a, **k))
    covs = layer_covariance(tiny_lm, [1, 3], n_tokens=150, seq_len=32, corpus=CORPUS, cache_dir=tmp_path, batch_tokens=64)
    assert calls == [[1, 3]]  # one pass for both layers
    chunks = token_chunks(tiny_lm.tokenizer, CORPUS, 150, 32)
    for layer in (1, 3):
        c = covs[layer]
        assert c.dtype == torch.float64 and c.shape == (64, 64)
        torch.testing.assert_close(c, _direct_moment(tiny_lm, layer, chunks), rtol=1e-5, atol=1e-9)
        assert torch.linalg.eigvalsh(c).min() > -1e-10  # positive semidefinite


def test_second_call_is_a_cache_hit_and_missing_layers_alone_are_computed(tiny_lm, tmp_path, monkeypatch):
    calls = []
    real = stats.compute_second_moments
    monkeypatch.setattr(stats, "compute_second_moments", lambda lm, layers, *a, **k: calls.append(list(layers)) or real(lm, layers, *a, **k))
    kw = dict(n_tokens=100, seq_len=32, corpus=CORPUS, cache_dir=tmp_path)
    first = layer_covariance(tiny_lm, [2], **kw)
    again = layer_covariance(tiny_lm, [2], **kw)
    assert calls == [[2]]
    assert torch.equal(first[2], again[2])
    both = layer_covariance(tiny_lm, [1, 2], **kw)
    assert calls == [[2], [1]]
    assert torch.equal(both[2], first[2])
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_key_covers_token_budget_corpus_and_weights(tiny_lm, tmp_path, monkeypatch):
    calls = []
    real = stats.compute_second_moments
    monkeypatch.setattr(stats, "compute_second_moments", lambda lm, layers, *a, **k: calls.append(list(layers)) or real(lm, layers, *a, **k))
    layer_covariance(tiny_lm, [0], n_tokens=100, seq_len=32, corpus=CORPUS, cache_dir=tmp_path)
    layer_covariance(tiny_lm, [0], n_tokens=120, seq_len=32, corpus=CORPUS, cache_dir=tmp_path)
    layer_covariance(tiny_lm, [0], n_tokens=100, seq_len=16, corpus=CORPUS, cache_dir=tmp_path)
    layer_covariance(tiny_lm, [0], n_tokens=100, seq_len=32, corpus=CORPUS[::-1], cache_dir=tmp_path)
    tiny_lm.weights_sha256 = "0" * 64
    layer_covariance(tiny_lm, [0], n_tokens=100, seq_len=32, corpus=CORPUS, cache_dir=tmp_path)
    assert len(calls) == 5
    assert len(list(tmp_path.rglob("*.pt"))) == 5


def test_corrupt_or_mismatched_cache_file_is_recomputed(tiny_lm, tmp_path, monkeypatch):
    calls = []
    real = stats.compute_second_moments
    monkeypatch.setattr(stats, "compute_second_moments", lambda lm, layers, *a, **k: calls.append(list(layers)) or real(lm, layers, *a, **k))
    kw = dict(n_tokens=100, seq_len=32, corpus=CORPUS, cache_dir=tmp_path)
    good = layer_covariance(tiny_lm, [1], **kw)[1]
    path = cache_path(tmp_path, cache_key(tiny_lm, 1, 100, 32, texts_sha256(CORPUS)))
    assert path.is_file()

    # 1. a tampered matrix under a valid key: the checksum catches it
    blob = torch.load(path, weights_only=True)
    blob["cov"] = blob["cov"].clone()
    blob["cov"][0, 0] += 1.0
    torch.save(blob, path)
    assert torch.equal(layer_covariance(tiny_lm, [1], **kw)[1], good)
    assert len(calls) == 2

    # 2. a file whose stored key belongs to something else (e.g. copied between models)
    blob = torch.load(path, weights_only=True)
    blob["key"] = {**blob["key"], "weights_sha256": "f" * 64}
    torch.save(blob, path)
    assert torch.equal(layer_covariance(tiny_lm, [1], **kw)[1], good)
    assert len(calls) == 3

    # 3. a truncated file
    path.write_bytes(path.read_bytes()[:100])
    assert torch.equal(layer_covariance(tiny_lm, [1], **kw)[1], good)
    assert len(calls) == 4

    # and the rewritten file is good again
    layer_covariance(tiny_lm, [1], **kw)
    assert len(calls) == 4


def test_cache_root_follows_kebench_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path))
    assert stats_dir() == tmp_path / "stats"
    assert stats_dir(tmp_path / "x") == tmp_path / "x"


def test_too_small_corpus_is_a_config_error(tiny_lm, tmp_path):
    import pytest

    from kebench.errors import ConfigError

    with pytest.raises(ConfigError, match="n_tokens"):
        layer_covariance(tiny_lm, [0], n_tokens=10**6, seq_len=32, corpus=CORPUS, cache_dir=tmp_path)


def test_corpus_from_a_file(tiny_lm, tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("\n".join(CORPUS) + "\n\n")
    a = layer_covariance(tiny_lm, [0], n_tokens=80, seq_len=32, corpus=f, cache_dir=tmp_path / "c")[0]
    b = layer_covariance(tiny_lm, [0], n_tokens=80, seq_len=32, corpus=CORPUS, cache_dir=tmp_path / "d")[0]
    torch.testing.assert_close(a, b)


def test_cache_files_get_the_usual_mode(tiny_lm, tmp_path):
    import os

    layer_covariance(tiny_lm, [0], n_tokens=64, seq_len=32, corpus=CORPUS, cache_dir=tmp_path)
    (path,) = tmp_path.rglob("*.pt")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
