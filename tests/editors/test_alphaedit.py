"""AlphaEdit: null-space projection preserves the keys C₀ summarises; sequential state lives on the instance."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from editors.alphaedit import AlphaEditEditor, AlphaEditHParams
from editors.alphaedit.null_space import null_space_projector
from editors.alphaedit.update import alphaedit_delta
from kebench.errors import ConfigError
from kebench.models.loaded import exact_checksum

from .test_memit import TOY, _nll, _sharpen


def _hparams(**kw) -> AlphaEditHParams:
    base = AlphaEditHParams(
        layers=(1, 2), v_lr=0.5, v_num_grad_steps=25, clamp_norm_factor=4.0, n_context_prefixes=2,
        context_prefix_tokens=4, stats_n_tokens=2000, stats_seq_len=64, L2=1e-4,
    )
    return dataclasses.replace(base, **kw)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path))
    return tmp_path


def _covariance_with_known_spectrum(d_ff: int, big: int, seed: int = 0):
    """C₀ = U diag(λ) Uᵀ with `big` eigenvalues in [1, 2] and the rest below 1e-4."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d_ff, d_ff, generator=g, dtype=torch.float64))
    evals = torch.cat([1 + torch.rand(big, generator=g, dtype=torch.float64), 1e-4 * torch.rand(d_ff - big, generator=g, dtype=torch.float64)])
    return u @ torch.diag(evals) @ u.T, u[:, :big], u[:, big:]


def test_projector_spans_exactly_the_small_eigenvalues():
    cov, kept, null = _covariance_with_known_spectrum(20, big=12)
    p, dim = null_space_projector(cov, threshold=1e-2)
    assert dim == 8 and p.dtype == torch.float64
    torch.testing.assert_close(p @ p, p, rtol=0, atol=1e-10)  # a projector
    torch.testing.assert_close(p, p.T, rtol=0, atol=1e-12)
    assert (p @ kept).abs().max() < 1e-10  # removes the preserved directions
    torch.testing.assert_close(p @ null, null, rtol=0, atol=1e-10)  # keeps the null space


def test_update_leaves_preserved_keys_unchanged_and_writes_new_ones():
    d, d_ff, n = 6, 20, 3
    cov, kept, null = _covariance_with_known_spectrum(d_ff, big=12)
    p, _ = null_space_projector(cov, 1e-2)
    g = torch.Generator().manual_seed(1)
    preserved = kept @ torch.randn(12, 50, generator=g, dtype=torch.float64)  # keys in C₀'s span
    keys = torch.randn(d_ff, n, generator=g, dtype=torch.float64)
    resid = torch.randn(d, n, generator=g, dtype=torch.float64)
    delta = alphaedit_delta(keys, resid, p, None, l2=1e-6)
    assert (delta @ preserved).norm() < 1e-9 * delta.norm() * preserved.norm()
    # new keys are written through their null-space part: exactly, with a tiny L2
    assert (delta @ keys - resid).norm() / resid.norm() < 1e-4
    assert (delta @ p - delta).abs().max() < 1e-9  # ΔW lives in the null space


def test_prior_keys_protect_earlier_edits():
    d, d_ff = 6, 20
    cov, _, null = _covariance_with_known_spectrum(d_ff, big=8)
    p, _ = null_space_projector(cov, 1e-2)
    g = torch.Generator().manual_seed(2)
    old_keys = null @ torch.randn(12, 4, generator=g, dtype=torch.float64)  # earlier edits (in the null space)
    new_keys = null @ torch.randn(12, 4, generator=g, dtype=torch.float64)
    resid = torch.randn(d, 4, generator=g, dtype=torch.float64)
    free = alphaedit_delta(new_keys, resid, p, None, l2=1e-3)
    kept = alphaedit_delta(new_keys, resid, p, 100.0 * old_keys @ old_keys.T, l2=1e-3)
    assert (kept @ old_keys).norm() < 0.2 * (free @ old_keys).norm()


@pytest.mark.parametrize("per_prefix", [False, True])
def test_apply_edits_restores_and_keeps_sequential_keys_on_the_instance(per_prefix, tiny_lm, cache):
    lm = _sharpen(tiny_lm)
    original = exact_checksum(lm.model)
    before = _nll(lm, TOY)
    # all of key space free (huge threshold): the edits must take
    editor = AlphaEditEditor(_hparams(nullspace_threshold=1e9, per_prefix_keys=per_prefix))
    first = editor.apply(lm, TOY[:2])
    assert (_nll(lm, TOY[:2]) < before[:2] - 2.0).all()
    assert editor.n_prior_edits == 2 and editor.prior_keys == {}  # read when a later batch needs them
    assert first.stats["null_space_dim"] == {1: lm.adapter.key_size, 2: lm.adapter.key_size}
    second = editor.apply(lm, TOY[2:])
    assert editor.n_prior_edits == 3 and set(editor.prior_keys) == {1, 2}
    assert (_nll(lm, TOY[:2]) < before[:2] - 1.0).all()  # the first batch survives the second
    # another instance shares nothing (no module-level cache)
    assert AlphaEditEditor(_hparams()).prior_keys == {}
    # checkpoint / resume
    resumed = AlphaEditEditor(_hparams(nullspace_threshold=1e9, per_prefix_keys=per_prefix))
    resumed.load_state_dict(editor.state_dict())
    assert resumed.n_prior_edits == 3
    for layer in (1, 2):
        assert torch.equal(resumed.prior_keys[layer], editor.prior_keys[layer])
    # undo in reverse: weights bit-exact, and the restored edits' keys leave the editor
    second.restore()
    assert editor.n_prior_edits == 2
    first.restore()
    assert exact_checksum(lm.model) == original
    assert editor.n_prior_edits == 0 and editor.prior_keys == {}


def test_batch_mode_restore_does_not_leak_keys_into_the_next_batch(tiny_lm, cache):
    editor = AlphaEditEditor(_hparams(v_num_grad_steps=2))
    editor.apply(tiny_lm, TOY[:1]).restore()
    assert editor.prior_keys == {} and editor.n_prior_edits == 0


def test_a_batch_s_keys_are_read_only_when_a_later_batch_needs_them(tiny_lm, cache, monkeypatch):
    import editors.alphaedit.editor as alpha

    reads: list[int] = []
    real = alpha.edit_keys
    monkeypatch.setattr(alpha, "edit_keys", lambda lm, batch, layer, *a: (reads.append(layer), real(lm, batch, layer, *a))[1])
    hp = _hparams(v_num_grad_steps=2, update_checkpoint=False)
    lazy = AlphaEditEditor(hp)
    lazy.apply(tiny_lm, TOY[:1]).restore()  # batch mode: never read
    assert reads == []
    first = lazy.apply(tiny_lm, TOY[:1])
    assert reads == [] and lazy.n_prior_edits == 1
    second = lazy.apply(tiny_lm, TOY[1:2])  # read now, from the weights the first batch left
    assert reads == [1, 2] and set(lazy.prior_keys) == {1, 2}
    second.restore()
    first.restore()
    # the same keys as reading them right after the edit (a checkpoint forces that)
    eager = AlphaEditEditor(hp)
    handle = eager.apply(tiny_lm, TOY[:1])
    eager.state_dict()
    assert all(torch.equal(handle.added_keys[l], first.added_keys[l]) for l in (1, 2))


def test_batch_alphaedit_reuses_memits_target_values_but_not_after_an_edit(tiny_lm, cache):
    from editors.memit import MEMITEditor, MemitHParams

    lm = _sharpen(tiny_lm)
    shared = dict(layers=(1, 2), v_lr=0.5, v_num_grad_steps=4, clamp_norm_factor=4.0, n_context_prefixes=2,
                  context_prefix_tokens=4, stats_n_tokens=2000, stats_seq_len=64)
    memit = MEMITEditor(MemitHParams(**shared)).apply(lm, TOY)
    assert memit.stats["v_cached_groups"] == 0
    # on the edited model (sequential mode) the weights differ: nothing may be reused
    stacked = AlphaEditEditor(_hparams(**shared)).apply(lm, TOY)
    assert stacked.stats["v_cached_groups"] == 0
    stacked.restore()
    memit.restore()
    alpha = AlphaEditEditor(_hparams(**shared)).apply(lm, TOY)
    assert alpha.stats["v_cached_groups"] == alpha.stats["v_groups"] == 1
    assert alpha.stats["v_delta_norm"] == memit.stats["v_delta_norm"]
    off = AlphaEditEditor(_hparams(**shared, v_cache=False))
    alpha.restore()
    assert off.apply(lm, TOY).stats["v_cached_groups"] == 0


def test_default_threshold_preserves_covariance_directions(tiny_lm, cache):
    """With the preserved subspace non-trivial, outputs for keys in C₀'s top span barely move."""
    editor = AlphaEditEditor(_hparams(nullspace_threshold=1e-9, v_num_grad_steps=5))
    cov = editor.covariance(tiny_lm)[2]
    evals, evecs = torch.linalg.eigh(cov)
    threshold = float(evals[len(evals) // 2])  # half the directions preserved
    editor = AlphaEditEditor(_hparams(nullspace_threshold=threshold, v_num_grad_steps=5))
    w0 = tiny_lm.adapter.as_value_by_key(tiny_lm.adapter.mlp_out_weight(2)).detach().double().clone()
    handle = editor.apply(tiny_lm, TOY)
    w1 = tiny_lm.adapter.as_value_by_key(tiny_lm.adapter.mlp_out_weight(2)).detach().double()
    preserved = evecs[:, evals >= threshold]
    change = (w1 - w0) @ preserved
    assert (w1 - w0).norm() > 0
    assert change.norm() < 1e-4 * (w1 - w0).norm()  # float32 weights: rounding only
    handle.restore()


def test_checkpoint_for_other_layers_is_refused():
    a = AlphaEditEditor(_hparams())
    a.prior_keys = {1: torch.zeros(2, 2, dtype=torch.float64), 2: torch.zeros(2, 2, dtype=torch.float64)}
    a.n_prior_edits = 1
    state = a.state_dict()
    with pytest.raises(ConfigError, match="layers"):
        AlphaEditEditor(_hparams(layers=(2, 3))).load_state_dict(state)


@pytest.mark.parametrize("model", ["gpt2-xl", "gpt-j-6b", "llama3-8b", "default"])
def test_per_model_configs_load(model):
    hp = AlphaEditEditor.default_hparams(model)
    assert isinstance(hp, AlphaEditHParams) and isinstance(hp.layers, tuple)
    if model == "llama3-8b":
        assert hp.layers == (4, 5, 6, 7, 8) and hp.L2 == 10 and hp.nullspace_threshold == 0.02


def test_resumed_update_reads_the_recorded_keys_and_sequential_state_keys_the_checkpoint(tiny_lm, cache, monkeypatch):
    import editors.alphaedit.editor as alpha

    lm = _sharpen(tiny_lm)
    first = AlphaEditEditor(_hparams(v_num_grad_steps=3))
    handle = first.apply(lm, TOY)
    first.state_dict()  # a checkpoint reads (and stores) the batch's keys
    edited, prior = exact_checksum(lm.model), {l: k.clone() for l, k in first.prior_keys.items()}
    assert set(prior) == {1, 2}
    handle.restore()
    again = AlphaEditEditor(_hparams(v_num_grad_steps=3))
    repeat = again.apply(lm, TOY)
    assert repeat.stats["update_resumed_steps"] == ["delta.1", "delta.2"]
    assert exact_checksum(lm.model) == edited
    reads: list[int] = []
    with monkeypatch.context() as patch:
        patch.setattr(alpha, "edit_keys", lambda *a: reads.append(1))
        again.state_dict()
    assert reads == []  # the keys came back from the checkpoint ...
    assert all(torch.equal(again.prior_keys[l], prior[l]) for l in prior)  # ... the same
    # the same edits on top of them (sequential): other weights and other prior keys, nothing resumed
    assert again.apply(lm, TOY).stats["update_resumed_steps"] == []
