"""Architecture adapters: where, in layer i, the MLP keys/values and the residual stream live.

Editors talk about "the MLP's output projection of layer i" and "the residual stream after
layer i"; each architecture names those modules differently and GPT-2 stores the output
projection transposed (Conv1D). An adapter hides both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kebench.errors import ModelError


@dataclass(frozen=True)
class ArchSpec:
    """Module-name templates ("{}" is the layer index) for one architecture family."""

    layers: str  # the decoder block; its output is the residual stream after layer i
    mlp: str  # the whole MLP (input: normed residual; output: added to the residual)
    mlp_in: tuple[str, ...]  # input projections (gate/up, c_fc, fc_in, ...)
    mlp_out: str  # output projection; its *input* is the MLP key, its output the value
    embed: str
    final_norm: str
    lm_head: str
    out_transposed: bool = False  # GPT-2 Conv1D stores weight as [d_ff, d_model]
    activation: str = "gelu"  # activation applied to mlp_in before mlp_out (for MeG's neuron)
    gated: bool = False  # LLaMA-style act(gate) * up


ARCH_SPECS: dict[str, ArchSpec] = {
    "llama": ArchSpec(
        layers="model.layers.{}",
        mlp="model.layers.{}.mlp",
        mlp_in=("model.layers.{}.mlp.gate_proj", "model.layers.{}.mlp.up_proj"),
        mlp_out="model.layers.{}.mlp.down_proj",
        embed="model.embed_tokens",
        final_norm="model.norm",
        lm_head="lm_head",
        activation="silu",
        gated=True,
    ),
    "gpt2": ArchSpec(
        layers="transformer.h.{}",
        mlp="transformer.h.{}.mlp",
        mlp_in=("transformer.h.{}.mlp.c_fc",),
        mlp_out="transformer.h.{}.mlp.c_proj",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        out_transposed=True,
        activation="gelu_new",
    ),
    "gptj": ArchSpec(
        layers="transformer.h.{}",
        mlp="transformer.h.{}.mlp",
        mlp_in=("transformer.h.{}.mlp.fc_in",),
        mlp_out="transformer.h.{}.mlp.fc_out",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        activation="gelu_new",
    ),
    "gpt_neox": ArchSpec(
        layers="gpt_neox.layers.{}",
        mlp="gpt_neox.layers.{}.mlp",
        mlp_in=("gpt_neox.layers.{}.mlp.dense_h_to_4h",),
        mlp_out="gpt_neox.layers.{}.mlp.dense_4h_to_h",
        embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm",
        lm_head="lm_head",  # "embed_out" before transformers 5
        activation="gelu",
    ),
    "phi": ArchSpec(
        layers="model.layers.{}",
        mlp="model.layers.{}.mlp",
        mlp_in=("model.layers.{}.mlp.fc1",),
        mlp_out="model.layers.{}.mlp.fc2",
        embed="model.embed_tokens",
        final_norm="model.final_layernorm",
        lm_head="lm_head",
        activation="gelu_new",
    ),
}
# Architectures that share LLaMA's module names.
for _alias in ("mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "smollm3"):
    ARCH_SPECS[_alias] = ARCH_SPECS["llama"]


class ArchAdapter:
    """Uniform access to one loaded model's MLPs, keys, values and residual stream."""

    def __init__(self, model: nn.Module, spec: ArchSpec, model_type: str) -> None:
        self.model = model
        self.spec = spec
        self.model_type = model_type
        self.num_layers = len(self._get(spec.layers.rsplit(".{}", 1)[0]))

    @classmethod
    def for_model(cls, model: nn.Module) -> "ArchAdapter":
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in ARCH_SPECS:
            known = ", ".join(sorted(ARCH_SPECS))
            raise ModelError(
                f"unsupported architecture {model_type!r}: kebench knows {known}; "
                "add an ArchSpec to kebench.models.adapter.ARCH_SPECS for it"
            )
        return cls(model, ARCH_SPECS[model_type], model_type)

    def _get(self, name: str) -> nn.Module:
        try:
            return self.model.get_submodule(name)
        except AttributeError as exc:
            raise ModelError(f"module {name!r} not found in {self.model_type} model: {exc}") from None

    def _check_layer(self, i: int) -> None:
        if not 0 <= i < self.num_layers:
            raise ModelError(f"layer {i} out of range: the model has layers 0..{self.num_layers - 1}")

    # names -----------------------------------------------------------------
    def layer_name(self, i: int) -> str:
        self._check_layer(i)
        return self.spec.layers.format(i)

    def mlp_name(self, i: int) -> str:
        self._check_layer(i)
        return self.spec.mlp.format(i)

    def mlp_in_names(self, i: int) -> tuple[str, ...]:
        self._check_layer(i)
        return tuple(t.format(i) for t in self.spec.mlp_in)

    def mlp_out_name(self, i: int) -> str:
        self._check_layer(i)
        return self.spec.mlp_out.format(i)

    # modules ---------------------------------------------------------------
    def layer(self, i: int) -> nn.Module:
        return self._get(self.layer_name(i))

    def mlp(self, i: int) -> nn.Module:
        return self._get(self.mlp_name(i))

    def mlp_out(self, i: int) -> nn.Module:
        return self._get(self.mlp_out_name(i))

    @property
    def embed(self) -> nn.Module:
        return self._get(self.spec.embed)

    @property
    def final_norm(self) -> nn.Module:
        return self._get(self.spec.final_norm)

    @property
    def lm_head(self) -> nn.Module:
        try:
            return self.model.get_submodule(self.spec.lm_head)
        except AttributeError:  # renamed across transformers versions (e.g. GPT-NeoX embed_out)
            head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
            return head if head is not None else self._get(self.spec.lm_head)

    # weights ---------------------------------------------------------------
    def mlp_out_weight(self, i: int) -> torch.nn.Parameter:
        """The output projection's parameter as stored (see `out_transposed`)."""
        return self.mlp_out(i).weight

    def mlp_out_param_name(self, i: int) -> str:
        return self.mlp_out_name(i) + ".weight"

    def as_value_by_key(self, weight: torch.Tensor) -> torch.Tensor:
        """View a stored output-projection weight (or update) as W[d_model, d_ff], mapping keys to values."""
        return weight.T if self.spec.out_transposed else weight

    def from_value_by_key(self, delta: torch.Tensor) -> torch.Tensor:
        """Inverse of `as_value_by_key`: turn a [d_model, d_ff] update into the stored orientation."""
        return delta.T if self.spec.out_transposed else delta

    @property
    def hidden_size(self) -> int:
        return int(self.mlp_out(0).weight.shape[1 if self.spec.out_transposed else 0])

    @property
    def key_size(self) -> int:
        """Width of the MLP keys (the intermediate size d_ff)."""
        return int(self.mlp_out(0).weight.shape[0 if self.spec.out_transposed else 1])
