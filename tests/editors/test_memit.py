"""MEMIT and the shared locate-then-edit core, on tiny random models (CPU, seconds)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from editors.memit import LocateEditHParams, MEMITEditor, MemitHParams
from kebench.data.case import unique_requests
from editors.memit.keys import edit_keys, lower_states, read_rows
from editors.memit.prompts import build_batch, prefix_weights, subject_last_index
from editors.memit.update import apply_delta, memit_delta, spread_updates
from editors.memit.suffix import SuffixRows, _cache_tensors, _passes, edits_by_suffix_width, takes_prefix_cache
from editors.memit.values import TargetValues, _cache_key, fit_target_values
from kebench.data.case import EditRequest
from kebench.errors import ConfigError, NumericalError
from kebench.fit_cache import FitCache
from kebench.models.loaded import LoadedModel, exact_checksum
from kebench.scoring import score_targets

# Prompts end with the subject: in a random 4-layer model little flows between positions,
# so the residual delta must sit where the next token is predicted for an edit to show.
TOY = [
    EditRequest("The city of {}", "Paris", "Rome", "France", "c1"),
    EditRequest("The mother tongue of {}", "Danielle Darrieux", "English", "French", "c2"),
    EditRequest("The instrument of {}", "Toko Yasuda", "piano", "guitar", "c3"),
]


def _sharpen(lm: LoadedModel, factor: float = 30.0) -> LoadedModel:
    """Scale the (tied) embeddings so the tiny model's logits can single out a token."""
    with torch.no_grad():
        lm.model.get_input_embeddings().weight.mul_(factor)
    lm.weights_sha256 = exact_checksum(lm.model)
    return lm


def _tiny_hparams(**kw) -> MemitHParams:
    base = MemitHParams(
        layers=(1, 2), mom2_update_weight=1.0, v_lr=0.5, v_num_grad_steps=25, clamp_norm_factor=4.0,
        n_context_prefixes=2, context_prefix_tokens=4, stats_n_tokens=2000, stats_seq_len=64,
    )
    return dataclasses.replace(base, **kw)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path))
    return tmp_path


def _nll(lm, requests, field="target_new"):
    return torch.tensor([s.nll for s in score_targets(lm, [r.text for r in requests], [getattr(r, field) for r in requests])])


# --------------------------------------------------------------------------- closed form


def test_memit_solve_maps_each_key_to_its_target_value():
    g = torch.Generator().manual_seed(0)
    d, d_ff, n = 8, 24, 5
    keys = torch.randn(d_ff, n, generator=g, dtype=torch.float64)
    resid = torch.randn(d, n, generator=g, dtype=torch.float64)
    a = torch.randn(d_ff, 4 * d_ff, generator=g, dtype=torch.float64)
    cov = a @ a.T / (4 * d_ff)
    delta = memit_delta(keys, resid, cov, mom2_update_weight=1e-6)
    assert delta.dtype == torch.float64 and delta.shape == (d, d_ff)
    assert (delta @ keys - resid).norm() / resid.norm() < 1e-4
    # λ trades fit for preservation: a large weight leaves most of the residual unwritten
    strong = memit_delta(keys, resid, cov, mom2_update_weight=1e4)
    assert (strong @ keys - resid).norm() > 0.9 * resid.norm()
    # it is the minimiser of ‖ΔW K − R‖² + λ tr(ΔW C ΔWᵀ): the gradient vanishes there
    lam = 3.0
    x = memit_delta(keys, resid, cov, lam)
    grad = (x @ keys - resid) @ keys.T + lam * x @ cov
    assert grad.abs().max() < 1e-9


def test_singular_system_is_a_numerical_error():
    keys = torch.zeros(6, 2, dtype=torch.float64)
    with pytest.raises(NumericalError):
        memit_delta(keys, torch.ones(3, 2, dtype=torch.float64), torch.zeros(6, 6, dtype=torch.float64), 1.0)


def test_nan_update_is_refused(tiny_lm):
    bad = torch.full((tiny_lm.adapter.hidden_size, tiny_lm.adapter.key_size), float("nan"), dtype=torch.float64)
    with pytest.raises(NumericalError):
        apply_delta(tiny_lm, 1, bad)


def test_gpt2_conv1d_orientation_maps_read_keys_to_values(smol_tokenizer):
    """Edit a tiny GPT-2 (Conv1D stores W transposed) and check the key -> value mapping."""
    lm = _tiny_gpt2(smol_tokenizer)
    batch = build_batch(smol_tokenizer, TOY, [""], with_targets=False)
    keys = edit_keys(lm, batch, 1).T  # [d_ff, n]
    resid = torch.randn(32, keys.shape[1], dtype=torch.float64)
    cov = torch.eye(keys.shape[0], dtype=torch.float64) * 1e-3
    delta = memit_delta(keys, resid, cov, 1e-3)
    proj = lm.adapter.mlp_out(1)
    with torch.no_grad():
        before = proj(keys.T.float())
        apply_delta(lm, 1, delta)
        after = proj(keys.T.float())
    torch.testing.assert_close((after - before).double(), resid.T, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- keys, prompts


def test_subject_last_index_points_at_the_end_of_the_subject(smol_tokenizer):
    tok = smol_tokenizer
    for prefix in ("", "Some words first. "):
        idx = subject_last_index(tok, prefix, "The mother tongue of {} is", "Danielle Darrieux")
        ids = tok(prefix + "The mother tongue of Danielle Darrieux is")["input_ids"]
        assert tok.decode(ids[: idx + 1]).endswith("Darrieux")
        assert not tok.decode(ids[:idx]).endswith("Darrieux")
    # no subject: the prompt's last token
    ids = tok("The capital of France is")["input_ids"]
    assert subject_last_index(tok, "", "The capital of France is{}", "") == len(ids) - 1


def test_rows_targets_and_kl_prompts(smol_tokenizer):
    batch = build_batch(smol_tokenizer, TOY[:2], ["", "A prefix. "])
    assert batch.n_edits == 2 and len(batch.edit) == 2 * 2 + 2  # 2 prefixes each + 1 KL row each
    assert batch.is_kl.sum() == 2
    # every target token sits right after the prompt and equals " " + target tokenised
    for e, req in enumerate(TOY[:2]):
        target = smol_tokenizer(" " + req.target_new, add_special_tokens=False)["input_ids"]
        row = int((batch.edit == e).nonzero()[0])
        cols = batch.tgt_col[batch.tgt_row == row]
        assert batch.tgt_id[batch.tgt_row == row].tolist() == target
        prompt_len = len(smol_tokenizer(req.text)["input_ids"])
        assert cols.tolist() == list(range(prompt_len - 1, prompt_len - 1 + len(target)))
    sub = batch.select(torch.tensor([1]))
    assert sub.n_edits == 1 and (sub.edit == 0).all() and len(sub.tgt_row) == 2 * len(
        smol_tokenizer(" English", add_special_tokens=False)["input_ids"])


def test_bare_prompt_carries_half_of_each_edits_average(tiny_lm):
    assert prefix_weights(["", "A. ", "B. "]) == [0.5, 0.25, 0.25]
    assert prefix_weights([""]) == [1.0] and prefix_weights(["A. ", "B. "]) == [0.5, 0.5]
    batch = build_batch(tiny_lm.tokenizer, TOY, ["", "A. ", "Bee. "])
    per_edit = torch.zeros(3, dtype=torch.float64).index_add(0, batch.edit, batch.weight)
    torch.testing.assert_close(per_edit, torch.ones(3, dtype=torch.float64))
    assert (batch.weight[batch.is_kl] == 0).all()
    rows, _ = read_rows(tiny_lm, batch, 1)
    mean = edit_keys(tiny_lm, batch, 1)
    torch.testing.assert_close(mean[0], 0.5 * rows[0] + 0.25 * rows[1] + 0.25 * rows[2])
    # per-prefix columns weigh each row by √w, so Σ column columnᵀ equals Σ w k kᵀ
    cols = edit_keys(tiny_lm, batch, 1, per_prefix=True)
    w = batch.weight[batch.rewrite_rows]
    torch.testing.assert_close(cols.T @ cols, (rows * w[:, None]).T @ rows)


def test_residuals_are_read_per_row_not_from_batch_item_zero(tiny_lm):
    """Decoder blocks return a tensor in transformers 5; `output[0]` would silently take row 0."""
    batch = build_batch(tiny_lm.tokenizer, TOY, ["", "Another start. "], with_targets=False)
    keys, resid = read_rows(tiny_lm, batch, key_layer=1, out_layer=2)
    with torch.no_grad():
        hs = tiny_lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True).hidden_states
    rows = batch.rewrite_rows
    expected = hs[3][rows, batch.lookup[rows]]  # hidden_states[i + 1] is block i's output
    torch.testing.assert_close(resid, expected, rtol=1e-5, atol=1e-6)
    assert keys.shape == (6, tiny_lm.adapter.key_size) and keys.dtype == torch.float64
    assert edit_keys(tiny_lm, batch, 1).shape == (3, tiny_lm.adapter.key_size)  # one averaged key per edit
    assert edit_keys(tiny_lm, batch, 1, per_prefix=True).shape == (6, tiny_lm.adapter.key_size)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_replayed_lower_blocks_read_the_same_keys_and_residuals(arch, tiny_lm, smol_tokenizer):
    """Keys and residuals read over cached states of the unedited lower blocks are bit-identical."""
    lm = tiny_lm if arch == "llama" else _tiny_gpt2(smol_tokenizer)
    batch = build_batch(lm.tokenizer, TOY, ["", "Another start. ", "A much longer start of a prompt. "])
    lower = lower_states(lm, batch, 0, rows_per_pass=4)  # 9 rows: passes of 4, 4 and 1
    assert len(lower.chunks) == 3
    for key_layer, out_layer in ((1, 2), (2, 2), (1, None)):
        keys, resid = read_rows(lm, batch, key_layer, out_layer, rows_per_pass=4)
        keys_r, resid_r = read_rows(lm, batch, key_layer, out_layer, rows_per_pass=4, lower=lower)
        assert torch.equal(keys, keys_r) and (resid is None or torch.equal(resid, resid_r))
    with pytest.raises(ValueError, match="cannot serve"):
        read_rows(lm, batch, 1, 2, rows_per_pass=8, lower=lower)


# --------------------------------------------------------------------------- target values


def _tiny_gpt2(tokenizer) -> LoadedModel:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=49152, n_positions=128)).eval()
    return LoadedModel(model, tokenizer, "tiny-gpt2", exact_checksum(model))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_replayed_fitting_starts_from_the_models_own_nll(arch, tiny_lm, smol_tokenizer):
    """Replaying cached lower blocks and projecting only target positions changes no number."""
    lm = tiny_lm if arch == "llama" else _tiny_gpt2(smol_tokenizer)
    batch = build_batch(lm.tokenizer, TOY, [""])
    flags = [p.requires_grad for p in lm.model.parameters()]
    values = fit_target_values(lm, batch, 1, LocateEditHParams(v_lr=0.5, v_num_grad_steps=2, v_stop_nll=0.0))
    torch.testing.assert_close(values.nll_start, _nll(lm, TOY), rtol=1e-4, atol=1e-4)
    assert [p.requires_grad for p in lm.model.parameters()] == flags  # frozen while fitting, then as before
    assert all(p.grad is None for p in lm.model.parameters())
    assert (values.steps == 1).all() and (values.nll_end != values.nll_start).all()  # the replayed delta acts


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_fitting_on_suffixes_equals_fitting_whole_rows(arch, tiny_lm, smol_tokenizer):
    """Caching every position before the lookup (left-padded prefixes of different lengths) and
    running only the rest changes no number: same residuals, start NLL and fitted δ."""
    lm = _sharpen(tiny_lm if arch == "llama" else _tiny_gpt2(smol_tokenizer))
    requests = [EditRequest("{} was born in the city of", "Toko Yasuda", "Tokyo", "Osaka", "c4")] + TOY
    batch = build_batch(lm.tokenizer, requests, ["", "Once upon a time. "])
    assert takes_prefix_cache(lm.model)
    cut = SuffixRows.cut(batch, split=True)
    assert cut.prefix_len > 0 and cut.input_ids.shape[1] < batch.input_ids.shape[1]
    assert (cut.prefix_cols >= 0).sum(1).tolist() == batch.lookup.tolist()  # each row's own prefix, left-padded
    cfg = LocateEditHParams(v_lr=0.5, v_num_grad_steps=8, clamp_norm_factor=4.0, v_stop_nll=0.0)
    whole = fit_target_values(lm, batch, 1, cfg, split=False)
    split = fit_target_values(lm, batch, 1, cfg, split=True)
    torch.testing.assert_close(split.row_h, whole.row_h, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(split.nll_start, whole.nll_start, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(split.delta, whole.delta, rtol=1e-3, atol=1e-3)
    assert (whole.nll_end < whole.nll_start).all()
    # groups are edits of like suffix length; any grouping fits each edit the same
    order = edits_by_suffix_width(batch)
    widths = [int((batch.last - batch.lookup)[batch.edit == e].max()) for e in order.tolist()]
    assert widths == sorted(widths) and widths[0] < widths[-1] and order.tolist() != sorted(order.tolist())
    pairs = fit_target_values(lm, batch, 1, dataclasses.replace(cfg, v_edits_per_batch=2), split=True)
    torch.testing.assert_close(pairs.delta, split.delta, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("slack", [0.0, 0.15, 100.0])
def test_prefixes_run_by_length_keep_what_one_padded_pass_computes(tiny_lm, slack):
    """fill_prefix runs rows of like prefix length together (slack 0: unpadded; a large slack: one
    pass); the cache it assembles holds the keys and values one pass over all rows, left-padded to
    the longest prefix, computes."""
    lm = tiny_lm
    requests = [EditRequest("{} was born in the city of", "Toko Yasuda", "Tokyo", "Osaka", "c4")] + TOY
    batch = build_batch(lm.tokenizer, requests, ["", "Once upon a time. ", "A. "])
    cut = SuffixRows.cut(batch, split=True)
    passes = _passes(cut.start, slack)
    assert sorted(torch.cat(passes).tolist()) == (cut.start > 0).nonzero().squeeze(1).tolist()  # each row once
    lengths = len(cut.start[cut.start > 0].unique())
    assert len(passes) == {0.0: lengths, 100.0: 1}.get(slack, len(passes)) and 1 <= len(passes) <= lengths
    assert len(cut.start.unique()) > 2  # several prefix lengths
    cut.fill_prefix(lm.model, batch, lm.device, slack)
    real = cut.prefix_cols >= 0
    positions = cut.prefix_cols.clamp(min=0)
    with torch.no_grad():
        out = lm.model(input_ids=batch.input_ids.gather(1, positions) * real, attention_mask=real.long(),
                       position_ids=positions, use_cache=True)
    padded = _cache_tensors(out)
    assert len(cut.kv) == len(padded)
    for (k, v), (k0, v0) in zip(cut.kv, padded):
        assert k.shape == k0.shape
        torch.testing.assert_close(k.transpose(1, 2)[real], k0.transpose(1, 2)[real], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v.transpose(1, 2)[real], v0.transpose(1, 2)[real], rtol=1e-5, atol=1e-5)


def test_batched_fitting_equals_one_edit_at_a_time(tiny_lm):
    lm = _sharpen(tiny_lm)
    batch = build_batch(lm.tokenizer, TOY, ["", "Once upon a time. "])
    cfg = LocateEditHParams(v_lr=0.5, v_num_grad_steps=12, clamp_norm_factor=4.0, v_stop_nll=2.0)
    together = fit_target_values(lm, batch, 1, dataclasses.replace(cfg, v_edits_per_batch=8))
    alone = fit_target_values(lm, batch, 1, dataclasses.replace(cfg, v_edits_per_batch=1))
    assert torch.equal(together.steps, alone.steps)
    torch.testing.assert_close(together.delta, alone.delta, rtol=1e-3, atol=1e-4)
    assert (together.nll_end < together.nll_start - 1.0).all()


def test_value_cache_returns_the_same_fit_and_refits_what_it_cannot_trust(tiny_lm, cache):
    lm = _sharpen(tiny_lm)
    batch = build_batch(lm.tokenizer, TOY, ["", "Once upon a time. "])
    cfg = LocateEditHParams(v_lr=0.5, v_num_grad_steps=6, clamp_norm_factor=4.0, v_stop_nll=0.0, v_edits_per_batch=2)
    first = FitCache("target_values", exact_checksum(lm.model), "cpu")
    fitted = fit_target_values(lm, batch, 1, cfg, first)
    assert (first.hits, first.misses, fitted.groups, fitted.cached_groups) == (0, 2, 2, 0)
    again = FitCache("target_values", exact_checksum(lm.model), "cpu")
    reused = fit_target_values(lm, batch, 1, cfg, again)
    assert (again.hits, reused.cached_groups) == (2, 2)
    assert fitted.cached_seconds == 0.0 and reused.cached_seconds > 0.0  # what the cached fits once cost
    assert reused.stats()["v_cached_seconds"] == reused.cached_seconds
    for name in ("delta", "row_h", "converged", "steps", "nll_start", "nll_end"):
        assert torch.equal(getattr(reused, name), getattr(fitted, name)), name
    # a truncated file is refitted, not trusted
    victim = sorted(again.root.rglob("*.pt"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    third = FitCache("target_values", exact_checksum(lm.model), "cpu")
    refit = fit_target_values(lm, batch, 1, cfg, third)
    assert (third.hits, third.misses) == (1, 1) and torch.equal(refit.delta, fitted.delta)
    # other weights, another layer or other knobs never hit
    other = FitCache("target_values", "0" * 64, "cpu")
    fit_target_values(lm, batch, 1, cfg, other)
    fit_target_values(lm, batch, 2, cfg, third)
    fit_target_values(lm, batch, 1, dataclasses.replace(cfg, v_lr=0.4), third)
    assert other.hits == 0 and third.hits == 1


def test_fitting_stops_each_edit_at_its_target(tiny_lm):
    lm = _sharpen(tiny_lm)
    batch = build_batch(lm.tokenizer, TOY, [""])
    values = fit_target_values(lm, batch, 2, LocateEditHParams(v_lr=0.5, v_num_grad_steps=40, clamp_norm_factor=8.0, v_stop_nll=3.0))
    assert values.converged.all()
    assert (values.nll_end < 3.0).all()
    assert (values.steps < 39).all() and values.steps.unique().numel() > 1  # each stopped on its own


def test_clamp_bounds_the_delta(tiny_lm):
    lm = _sharpen(tiny_lm)
    batch = build_batch(lm.tokenizer, TOY, [""])
    values = fit_target_values(lm, batch, 2, LocateEditHParams(v_lr=1.0, v_num_grad_steps=10, clamp_norm_factor=0.1))
    h = values.row_h[batch.rewrite_rows]
    assert (values.delta.norm(dim=1) <= 0.1 * h.norm(dim=1) + 1e-5).all()


def test_spread_reaches_the_target_residual_when_editing_the_top_layer_alone(tiny_lm):
    batch = build_batch(tiny_lm.tokenizer, TOY, ["", "Some context. "], with_targets=False)
    _, h = read_rows(tiny_lm, batch, 2, 2)
    row_h = torch.zeros(len(batch.edit), h.shape[1])
    row_h[batch.rewrite_rows] = h
    n = batch.n_edits
    wanted = 0.05 * torch.randn(n, h.shape[1], generator=torch.Generator().manual_seed(1))
    values = TargetValues(2, wanted, row_h, torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.long),
                          torch.zeros(n), torch.zeros(n), 0.0)
    tiny_cov = torch.eye(tiny_lm.adapter.key_size, dtype=torch.float64)
    out = spread_updates(tiny_lm, batch, values, [2], lambda l, k, r: memit_delta(k, r, tiny_cov, 1e-6))
    # keys averaged over prefixes: each edit's mean output moves by exactly its δ
    assert out["delta_missing_frac"] < 1e-2


def test_spread_reports_progress_over_every_key_read(tiny_lm, monkeypatch, capsys):
    """The update is the longest silent phase at 10k edits on a CPU: it must count its passes."""
    from kebench import progress

    batch = build_batch(tiny_lm.tokenizer, TOY, ["", "Some context. "], with_targets=False)
    _, h = read_rows(tiny_lm, batch, 2, 2)
    row_h = torch.zeros(len(batch.edit), h.shape[1])
    row_h[batch.rewrite_rows] = h
    n = batch.n_edits
    values = TargetValues(2, torch.zeros(n, h.shape[1]), row_h, torch.ones(n, dtype=torch.bool),
                          torch.zeros(n, dtype=torch.long), torch.zeros(n), torch.zeros(n), 0.0)
    tiny_cov = torch.eye(tiny_lm.adapter.key_size, dtype=torch.float64)
    monkeypatch.setattr(progress, "_enabled", True)
    spread_updates(tiny_lm, batch, values, [1, 2], lambda l, k, r: memit_delta(k, r, tiny_cov, 1e-6), rows_per_pass=2)
    passes = -(-len(batch.rewrite_rows) // 2)
    assert passes > 1
    err = capsys.readouterr().err
    assert f"writing updates into layers 1,2: {3 * passes}/{3 * passes} (100%)" in err and "done" in err


def test_lower_states_report_progress(tiny_lm, monkeypatch, capsys):
    """Before the update writes anything, the blocks below the edit layers run once over every row."""
    from kebench import progress

    batch = build_batch(tiny_lm.tokenizer, TOY, ["", "Some context. "], with_targets=False)
    monkeypatch.setattr(progress, "_enabled", True)
    lower = lower_states(tiny_lm, batch, 0, rows_per_pass=2)
    passes = -(-len(batch.rewrite_rows) // 2)
    assert passes > 1 and len(lower.chunks) == passes
    assert f"block outputs below the edit layers (0..0): {passes}/{passes} (100%)" in capsys.readouterr().err


# --------------------------------------------------------------------------- editor


@pytest.mark.parametrize("per_prefix", [False, True])
def test_apply_makes_the_edits_and_restore_is_bit_exact(per_prefix, tiny_lm, cache):
    lm = _sharpen(tiny_lm)
    original = exact_checksum(lm.model)
    before_new, before_true = _nll(lm, TOY), _nll(lm, TOY, "target_true")
    editor = MEMITEditor(_tiny_hparams(per_prefix_keys=per_prefix))
    handle = editor.apply(lm, TOY)
    after_new, after_true = _nll(lm, TOY), _nll(lm, TOY, "target_true")
    assert (after_new < before_new - 2.0).all(), (before_new, after_new)
    assert (after_new < after_true).all()  # efficacy 100 %
    assert (before_new < before_true).float().mean() < 1  # ... which it was not before
    s = handle.stats
    assert s["n_edits"] == 3 and len(s["per_edit"]) == 3 and set(s["time_s"]) >= {"stats", "values", "update"}
    assert 0 <= s["v_converged_frac"] <= 1 and s["v_mean_steps"] > 0
    assert sorted(handle.originals) == [lm.adapter.mlp_out_param_name(l) for l in (1, 2)]
    assert exact_checksum(lm.model) != original
    handle.restore()
    assert exact_checksum(lm.model) == original


def test_duplicate_requests_are_applied_once(tiny_lm, cache):
    assert len(unique_requests(TOY + TOY[:1])) == 3
    handle = MEMITEditor(_tiny_hparams(v_num_grad_steps=2)).apply(tiny_lm, TOY + TOY[:1])
    assert handle.stats["n_edits"] == 3


def test_prefixes_are_model_written_deterministic_and_checkpointed(tiny_lm, cache):
    a = MEMITEditor(_tiny_hparams(n_context_prefixes=3))
    pre = a.prefixes(tiny_lm)
    assert pre[0] == "" and len(pre) == 4 and all(p.endswith(". ") and len(p) > 4 for p in pre[1:])
    assert MEMITEditor(_tiny_hparams(n_context_prefixes=3)).prefixes(tiny_lm) == pre
    assert MEMITEditor(_tiny_hparams(n_context_prefixes=3, seed=1)).prefixes(tiny_lm) != pre
    b = MEMITEditor(_tiny_hparams(n_context_prefixes=3))
    b.load_state_dict(a.state_dict())
    assert b._prefixes == pre


def test_layers_beyond_the_model_are_a_config_error(tiny_lm, cache):
    with pytest.raises(ConfigError, match="layers"):
        MEMITEditor(_tiny_hparams(layers=(2, 9))).apply(tiny_lm, TOY)
    with pytest.raises(ConfigError):
        _tiny_hparams(layers=(3, 1))


def test_failed_update_leaves_the_model_untouched(tiny_lm, cache, monkeypatch):
    original = exact_checksum(tiny_lm.model)
    calls = []

    def failing(keys, resid, cov, weight):
        calls.append(1)
        if len(calls) == 2:
            raise NumericalError("boom")
        return memit_delta(keys, resid, cov, weight)

    monkeypatch.setattr("editors.memit.editor.memit_delta", failing)
    with pytest.raises(NumericalError):
        MEMITEditor(_tiny_hparams(v_num_grad_steps=2)).apply(tiny_lm, TOY)
    assert exact_checksum(tiny_lm.model) == original


def test_a_killed_update_resumes_at_the_layer_it_was_on_with_the_same_weights(tiny_lm, cache, monkeypatch):
    lm = _sharpen(tiny_lm)
    hp = _tiny_hparams(layers=(0, 1, 2), v_num_grad_steps=3)
    reference = MEMITEditor(dataclasses.replace(hp, update_checkpoint=False)).apply(lm, TOY)
    edited = exact_checksum(lm.model)
    assert reference.stats["update_resumed_steps"] == []
    reference.restore()
    calls = []

    def dies_on_the_third_layer(keys, resid, cov, weight):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return memit_delta(keys, resid, cov, weight)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr("editors.memit.editor.memit_delta", dies_on_the_third_layer)
        MEMITEditor(hp).apply(lm, TOY)
    resumed = MEMITEditor(hp).apply(lm, TOY)
    assert resumed.stats["update_resumed_steps"] == ["delta.0", "delta.1"]
    assert exact_checksum(lm.model) == edited  # bit for bit the uninterrupted update
    assert resumed.stats["layer_updates"] == reference.stats["layer_updates"]
    assert resumed.stats["delta_missing_frac"] == reference.stats["delta_missing_frac"]
    resumed.restore()
    # other hyperparameters or other edits never read those steps
    assert MEMITEditor(dataclasses.replace(hp, mom2_update_weight=2.0)).apply(lm, TOY).stats["update_resumed_steps"] == []


@pytest.mark.parametrize("model", ["gpt2-xl", "gpt-j-6b", "llama3-8b", "default"])
def test_per_model_configs_load(model):
    hp = MEMITEditor.default_hparams(model)
    assert isinstance(hp, MemitHParams) and isinstance(hp.layers, tuple)
    expected = {"gpt2-xl": (13, 14, 15, 16, 17), "gpt-j-6b": (3, 4, 5, 6, 7, 8), "llama3-8b": (4, 5, 6, 7, 8)}
    if model in expected:
        assert hp.layers == expected[model]


@pytest.mark.integration
def test_memit_edits_the_default_model(real_lm, cache):
    """Three CounterFact edits on SmolLM2-135M take, and restore() is bit-exact (about a minute)."""
    from kebench.suites import load_cases

    requests = [c.request for c in load_cases("counterfact-rome")[:3]]
    hp = dataclasses.replace(MEMITEditor.default_hparams("default"), stats_n_tokens=8192, n_context_prefixes=2)
    original = exact_checksum(real_lm.model)
    handle = MEMITEditor(hp).apply(real_lm, requests)
    try:
        assert (_nll(real_lm, requests) < _nll(real_lm, requests, "target_true")).all()
    finally:
        handle.restore()
    assert exact_checksum(real_lm.model) == original


def test_groups_claimed_by_another_process_are_read_once_it_saves_them(tiny_lm, cache, tmp_path):
    lm = _sharpen(tiny_lm)
    batch = build_batch(lm.tokenizer, TOY, [""])
    cfg = LocateEditHParams(v_lr=0.5, v_num_grad_steps=4, clamp_norm_factor=4.0, v_stop_nll=0.0, v_edits_per_batch=1)
    alone = fit_target_values(lm, batch, 1, cfg, FitCache("target_values", "c" * 64, "cpu", cache_dir=tmp_path / "a"))
    # another "process" holds the first group's claim; it saves and lets go once this one waits for it
    shared = FitCache("target_values", "c" * 64, "cpu", cache_dir=tmp_path / "b")
    shared.poll_seconds = 0.01
    first_key = _cache_key(shared, 1, cfg, batch.select(edits_by_suffix_width(batch)[:1]))
    assert shared.claim(first_key)
    loaded: list[str] = []
    load, claimed = shared.load, shared.claimed

    def holder_finishes(key):
        if key == first_key and not shared.path(key).is_file():
            src = next(p for p in (tmp_path / "a").rglob("*.pt") if p.name == shared.path(key).name)
            shared.path(key).write_bytes(src.read_bytes())
            shared.release(key)
        return claimed(key)

    shared.load = lambda key, fields=(): (loaded.append(key), load(key, fields))[1]
    shared.claimed = holder_finishes
    out = fit_target_values(lm, batch, 1, cfg, shared)
    assert out.cached_groups == 1 and out.groups == batch.n_edits
    assert loaded[0] == loaded[-1] == first_key and len(loaded) == batch.n_edits + 1  # looked at first, read last
    for name in ("delta", "converged", "steps", "nll_start", "nll_end", "row_h"):
        assert torch.equal(getattr(out, name), getattr(alone, name)), name
