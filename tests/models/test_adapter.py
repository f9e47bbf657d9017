"""ArchAdapter on tiny random models of every supported family: names resolve and orientations are right."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers as T
from torch import nn
from transformers.activations import ACT2FN

from kebench.errors import ModelError
from kebench.models.adapter import ArchAdapter

D_MODEL, D_FF, LAYERS = 32, 64, 3

CONFIGS = {
    "llama": lambda: T.LlamaConfig(vocab_size=128, hidden_size=D_MODEL, intermediate_size=D_FF, num_hidden_layers=LAYERS,
                                   num_attention_heads=4, num_key_value_heads=2),
    "gpt2": lambda: T.GPT2Config(vocab_size=128, n_embd=D_MODEL, n_inner=D_FF, n_layer=LAYERS, n_head=4),
    "gptj": lambda: T.GPTJConfig(vocab_size=128, n_embd=D_MODEL, n_inner=D_FF, n_layer=LAYERS, n_head=4, rotary_dim=4),
    "gpt_neox": lambda: T.GPTNeoXConfig(vocab_size=128, hidden_size=D_MODEL, intermediate_size=D_FF,
                                        num_hidden_layers=LAYERS, num_attention_heads=4),
    "phi": lambda: T.PhiConfig(vocab_size=128, hidden_size=D_MODEL, intermediate_size=D_FF, num_hidden_layers=LAYERS,
                               num_attention_heads=4),
}


@pytest.fixture(params=sorted(CONFIGS), scope="module")
def tiny(request) -> tuple[nn.Module, ArchAdapter]:
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(CONFIGS[request.param]()).eval()
    return model, ArchAdapter.for_model(model)


def _capture(module: nn.Module, model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, object]:
    """(input, output) of `module` during a forward pass, plus the model's output with hidden states."""
    seen = {}

    def hook(_m, args, out):
        seen["in"], seen["out"] = args[0], out[0] if isinstance(out, tuple) else out

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            result = model(ids, output_hidden_states=True)
    finally:
        handle.remove()
    return seen["in"], seen["out"], result


IDS = torch.tensor([[3, 17, 42, 5, 99, 8]])


def test_modules_resolve(tiny):
    model, ad = tiny
    assert ad.num_layers == LAYERS
    assert ad.embed is model.get_input_embeddings()
    assert ad.lm_head is model.get_output_embeddings()
    assert ad.hidden_size == D_MODEL and ad.key_size == D_FF
    for i in range(LAYERS):
        assert ad.layer(i) is model.get_submodule(ad.layer_name(i))
        assert all(isinstance(model.get_submodule(n), nn.Module) for n in ad.mlp_in_names(i))
        assert ad.mlp_out_param_name(i) in dict(model.named_parameters())
    with pytest.raises(ModelError, match="out of range"):
        ad.layer(LAYERS)


def test_layer_output_is_residual_stream(tiny):
    model, ad = tiny
    for i in range(LAYERS - 1):  # HF's last hidden state is after the final norm
        _, out, result = _capture(ad.layer(i), model, IDS)
        torch.testing.assert_close(out, result.hidden_states[i + 1])


def test_final_norm_then_lm_head_gives_logits(tiny):
    model, ad = tiny
    _, normed, result = _capture(ad.final_norm, model, IDS)
    torch.testing.assert_close(normed, result.hidden_states[-1])
    with torch.no_grad():
        torch.testing.assert_close(ad.lm_head(normed), result.logits)


def test_value_by_key_maps_keys_to_values(tiny):
    """W[d_model, d_ff] @ key (+ bias) is the MLP's output, in every storage orientation (GPT-2 Conv1D too)."""
    model, ad = tiny
    i = 1
    key, value, _ = _capture(ad.mlp_out(i), model, IDS)
    _, mlp_value, _ = _capture(ad.mlp(i), model, IDS)
    W = ad.as_value_by_key(ad.mlp_out_weight(i))
    assert W.shape == (D_MODEL, D_FF) and key.shape[-1] == D_FF
    bias = getattr(ad.mlp_out(i), "bias", None)
    with torch.no_grad():
        expect = key @ W.T + (0 if bias is None else bias)
    torch.testing.assert_close(expect, value)
    torch.testing.assert_close(mlp_value, value)
    assert ad.from_value_by_key(W).shape == ad.mlp_out_weight(i).shape
    assert torch.equal(ad.from_value_by_key(W), ad.mlp_out_weight(i))


def test_activation_and_gating_produce_the_key(tiny):
    """spec.activation/gated reproduce the MLP key from the input projections (MeG's neuron relies on this)."""
    model, ad = tiny
    i = 0
    key, _, _ = _capture(ad.mlp_out(i), model, IDS)
    x, _, _ = _capture(ad.mlp(i), model, IDS)
    act = ACT2FN[ad.spec.activation]
    ins = [model.get_submodule(n) for n in ad.mlp_in_names(i)]
    with torch.no_grad():
        expect = act(ins[0](x)) * ins[1](x) if ad.spec.gated else act(ins[0](x))
    torch.testing.assert_close(expect, key)


def test_unknown_architecture_is_a_model_error():
    model = nn.Linear(2, 2)
    model.config = SimpleNamespace(model_type="mamba")
    with pytest.raises(ModelError, match="unsupported architecture 'mamba'"):
        ArchAdapter.for_model(model)
