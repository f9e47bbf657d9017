"""MeG's dynamic neuron hook: exact when off, the documented formula when on, per-row neurons."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import ACT2FN

from kebench.errors import ModelError
from kebench.models.loaded import LoadedModel
from editors.meg.neuron import DynamicNeuron, NeuronSpec


def _ids(lm: LoadedModel, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = [lm.tokenizer(p)["input_ids"] for p in prompts]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), 2)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    return ids, mask


PROMPTS = ["The capital of France is", "Danielle Darrieux speaks"]


def test_detached_and_unset_neuron_leave_outputs_bit_identical(tiny_lm):
    ids, mask = _ids(tiny_lm, PROMPTS)
    ref = tiny_lm.model(input_ids=ids, attention_mask=mask).logits
    spec = NeuronSpec(32)
    neuron = DynamicNeuron(tiny_lm.adapter.mlp(1), spec)
    with neuron:
        assert torch.equal(tiny_lm.model(input_ids=ids, attention_mask=mask).logits, ref)
        with neuron.vectors(torch.zeros(2, spec.size)):
            assert torch.equal(tiny_lm.model(input_ids=ids, attention_mask=mask).logits, ref)
        with neuron.vectors(torch.randn(2, spec.size)):
            assert not torch.allclose(tiny_lm.model(input_ids=ids, attention_mask=mask).logits, ref)
    assert not neuron.attached
    assert torch.equal(tiny_lm.model(input_ids=ids, attention_mask=mask).logits, ref)


def test_rows_use_their_own_neuron_and_zero_rows_stay_exact(tiny_lm):
    ids, mask = _ids(tiny_lm, PROMPTS)
    ref = tiny_lm.model(input_ids=ids, attention_mask=mask).logits
    spec = NeuronSpec(32)
    vec = torch.randn(spec.size)
    with DynamicNeuron(tiny_lm.adapter.mlp(2), spec) as neuron:
        with neuron.vectors(torch.stack([vec, torch.zeros(spec.size)])):
            mixed = tiny_lm.model(input_ids=ids, attention_mask=mask).logits
        with neuron.vectors(vec[None]):
            alone = tiny_lm.model(input_ids=ids[:1], attention_mask=mask[:1]).logits
    assert torch.equal(mixed[1], ref[1])
    n = int(mask[0].sum())
    assert torch.allclose(mixed[0, :n], alone[0, :n], atol=1e-5)
    assert not torch.allclose(mixed[0, :n], ref[0, :n])


@pytest.mark.parametrize("activation", ["linear", "silu"])
def test_delta_matches_the_formula(tiny_lm, activation):
    spec = NeuronSpec(32, activation)
    mlp = tiny_lm.adapter.mlp(0)
    h = torch.randn(3, 5, 32)
    vec = torch.randn(3, spec.size)
    k, b, v = vec[:, :32], vec[:, 32] if spec.has_bias else None, vec[:, 32 + spec.has_bias :]
    pre = torch.einsum("ntd,nd->nt", h, k)
    act = pre if b is None else torch.nn.functional.silu(pre + b[:, None])
    expected = mlp(h) + act[..., None] * v[:, None]
    with DynamicNeuron(mlp, spec) as neuron, neuron.vectors(vec):
        assert torch.allclose(mlp(h), expected, atol=1e-5)
    assert spec.size == 64 + int(activation != "linear")


def test_gpt2_conv1d_mlp_hook():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=4, n_head=4, vocab_size=128)).eval()

    class Tok:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) % 128 for c in text]}

    lm = LoadedModel(model, Tok(), "tiny-gpt2", "x")
    spec = NeuronSpec(lm.adapter.hidden_size, "gelu_new")
    assert spec.size == 65
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    ref = model(input_ids=ids).logits
    mlp = lm.adapter.mlp(2)
    h = torch.randn(2, 4, 32)
    vec = torch.randn(2, spec.size)
    plain = mlp(h)
    k, b, v = spec.split(vec)
    expected = plain + ACT2FN["gelu_new"](torch.einsum("ntd,nd->nt", h, k) + b[:, None])[..., None] * v[:, None]
    with DynamicNeuron(mlp, spec) as neuron:
        with neuron.vectors(vec):
            assert torch.allclose(mlp(h), expected, atol=1e-5)
            assert not torch.allclose(model(input_ids=ids).logits, ref)
        assert torch.equal(model(input_ids=ids).logits, ref)


def test_beam_style_repeated_batches_and_bad_widths(tiny_lm):
    spec = NeuronSpec(32)
    mlp = tiny_lm.adapter.mlp(1)
    h = torch.randn(4, 3, 32)
    vec = torch.randn(2, spec.size)
    with DynamicNeuron(mlp, spec) as neuron:
        with neuron.vectors(vec):
            out = mlp(h)
        with neuron.vectors(vec.repeat_interleave(2, 0)):
            assert torch.allclose(out, mlp(h))
        with neuron.vectors(torch.randn(3, spec.size)), pytest.raises(ModelError, match="vectors for a batch"):
            mlp(h)
        with pytest.raises(ModelError, match="width"):
            neuron.set_vectors(torch.randn(2, spec.size + 1))
