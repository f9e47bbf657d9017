import torch

from editors.ft import FTEditor, FTHParams
from kebench.data.case import EditRequest
from kebench.tokens import encode_prompt_targets

from tests.helpers import target_nll


def _nll(lm, reqs):
    b = encode_prompt_targets(lm.tokenizer, [r.text for r in reqs], [r.target_new for r in reqs])
    with torch.no_grad():
        return target_nll(lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.labels)


def test_ft_lowers_target_nll_within_constraint_and_restores(tiny_lm):
    reqs = [
        EditRequest("{} is located in", "The Eiffel Tower", "Rome"),
        EditRequest("{} was written by", "Hamlet", "Tolstoy"),
    ]
    hp = FTHParams(layers=(2,), lr=1e-2, steps=20, norm_constraint=0.05)
    name = tiny_lm.adapter.mlp_out_param_name(2)
    w0 = dict(tiny_lm.model.named_parameters())[name].detach().clone()
    before = _nll(tiny_lm, reqs)
    handle = FTEditor(hp).apply(tiny_lm, reqs)
    after = _nll(tiny_lm, reqs)
    w = dict(tiny_lm.model.named_parameters())[name]
    assert (after < before - 0.1).all(), (before, after)
    assert (w - w0).abs().max() <= 0.05 + 1e-7
    assert not w.requires_grad
    handle.restore()
    assert torch.equal(w, w0)


def test_ft_defaults_come_from_model_config():
    hp = FTEditor.default_hparams("default")
    assert hp.layers == (20,) and isinstance(hp.layers, tuple)


def test_replayed_loss_matches_full_forward(tiny_lm):
    """Skipping the frozen lower blocks (replaying their cached output) must not change the loss."""
    from kebench.hooks import block_list, capture_block_output

    reqs = [EditRequest("{} is located in", "The Eiffel Tower", "Rome"), EditRequest("{} plays", "Messi", "chess")]
    b = encode_prompt_targets(tiny_lm.tokenizer, [r.text for r in reqs], [r.target_new for r in reqs])
    blocks, _ = block_list(tiny_lm.model, tiny_lm.adapter.layer_name(0))
    idx = torch.tensor([1, 0])
    full = FTEditor._loss(tiny_lm, b, idx, blocks, 0, None, False)
    cached, tuple_out = capture_block_output(tiny_lm.model, blocks, 1, input_ids=b.input_ids, attention_mask=b.attention_mask)
    replayed = FTEditor._loss(tiny_lm, b, idx, blocks, 2, cached, tuple_out)
    with torch.no_grad():
        logits = tiny_lm.model(input_ids=b.input_ids[idx], attention_mask=b.attention_mask[idx]).logits
    reference = target_nll(logits, b.labels[idx]).mean()
    torch.testing.assert_close(full, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(replayed, reference, rtol=1e-5, atol=1e-5)
