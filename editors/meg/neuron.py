"""MeG's dynamic neuron: one extra MLP unit per sample, added by a forward hook.

The official code grows the MLP by one row/column and rewrites it per prompt; here the
unit lives in a hook on the MLP of one layer, so weights are never resized or touched and
a batch can carry a different neuron in every row. With the neuron vector
[k | b | v] (b only for non-linear units) and h the MLP input (after the pre-MLP norm):

    linear:      delta = v * (k . h)               (official Llama-3 variant, MEG.md §5/§12)
    activation:  delta = v * act(k . h + b)        (official GPT-J / Phi-2 variant)

delta is added to the MLP output at every token position. Rows whose vector is all zeros,
and every row while no vectors are set, return the unedited output bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kebench.errors import ConfigError, ModelError

ACTIVATIONS = ("linear", "silu", "gelu", "gelu_new", "relu")


@dataclass(frozen=True)
class NeuronSpec:
    """Shape of one neuron vector: [k (hidden) | b (1, non-linear units only) | v (hidden)]."""

    hidden_size: int
    activation: str = "linear"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown neuron activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")

    @property
    def has_bias(self) -> bool:
        return self.activation != "linear"

    @property
    def size(self) -> int:
        return 2 * self.hidden_size + int(self.has_bias)

    def split(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """[n, size] -> k [n, d], b [n] or None, v [n, d]."""
        d = self.hidden_size
        if vectors.shape[-1] != self.size:
            raise ModelError(f"neuron vectors have width {vectors.shape[-1]}, expected {self.size} for {self}")
        k = vectors[..., :d]
        b = vectors[..., d] if self.has_bias else None
        v = vectors[..., d + int(self.has_bias) :]
        return k, b, v

    def delta(self, h: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """The unit's contribution for inputs h [n, T, d] and one vector per row [n, size]."""
        k, b, v = self.split(vectors.to(h.dtype))
        pre = torch.einsum("ntd,nd->nt", h, k)
        if b is not None:
            pre = pre + b[:, None]
        act = pre if self.activation == "linear" else _activation(self.activation)(pre)
        return act[..., None] * v[:, None, :]

    def init_vector(self, key_size: int, seed: int) -> torch.Tensor:
        """nn.Linear-style init (k, b ~ U(±1/sqrt(d)), v ~ U(±1/sqrt(d_ff))), as the official extra unit gets."""
        gen = torch.Generator().manual_seed(seed)
        d = self.hidden_size
        k = (torch.rand(d, generator=gen) * 2 - 1) / d**0.5
        b = (torch.rand(int(self.has_bias), generator=gen) * 2 - 1) / d**0.5
        v = (torch.rand(d, generator=gen) * 2 - 1) / key_size**0.5
        return torch.cat([k, b, v])


def _activation(name: str) -> nn.Module:
    from transformers.activations import ACT2FN

    return ACT2FN[name]


def _mlp_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for name in ("hidden_states", "x", "input"):
        if isinstance(kwargs.get(name), torch.Tensor):
            return kwargs[name]
    raise ModelError("MeG neuron hook could not find the MLP input tensor; the MLP's forward signature is unsupported")


class DynamicNeuron:
    """A per-sample extra MLP unit on `mlp` (a hook; the module itself is never modified).

    Use as a context manager, or `attach()` / `detach()`. `set_vectors([B, size])` gives
    every batch row its own neuron; `None` (the default) turns the unit off.
    """

    def __init__(self, mlp: nn.Module, spec: NeuronSpec) -> None:
        self.mlp = mlp
        self.spec = spec
        self._vectors: torch.Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    @property
    def attached(self) -> bool:
        return self._handle is not None

    def attach(self) -> DynamicNeuron:
        if self._handle is None:
            self._handle = self.mlp.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._vectors = None

    def __enter__(self) -> DynamicNeuron:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def set_vectors(self, vectors: torch.Tensor | None) -> None:
        """One neuron per batch row ([B, size]); None switches the unit off."""
        if vectors is not None:
            if vectors.dim() != 2:
                raise ModelError(f"neuron vectors must be [batch, {self.spec.size}], got shape {tuple(vectors.shape)}")
            self.spec.split(vectors)  # width check
        self._vectors = vectors

    @contextlib.contextmanager
    def vectors(self, vectors: torch.Tensor | None) -> Iterator[None]:
        """Set the per-row neurons for the duration of one forward/generate call."""
        previous = self._vectors
        self.set_vectors(vectors)
        try:
            yield
        finally:
            self._vectors = previous

    def _hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        vectors = self._vectors
        if vectors is None:
            return None
        h = _mlp_input(args, kwargs)
        out = output[0] if isinstance(output, tuple) else output
        batch = h.shape[0]
        if vectors.shape[0] != batch:
            # generate(num_beams / num_return_sequences) repeats every prompt consecutively.
            if batch % vectors.shape[0]:
                raise ModelError(
                    f"MeG neuron got {vectors.shape[0]} vectors for a batch of {batch}; "
                    "call conditioning() with exactly the prompts of the batch"
                )
            vectors = vectors.repeat_interleave(batch // vectors.shape[0], dim=0)
        vectors = vectors.to(h.device)
        active = vectors.ne(0).any(dim=-1)
        if bool(active.all()):
            new = out + self.spec.delta(h, vectors)
        elif bool(active.any()):
            new = out.clone()
            new[active] = out[active] + self.spec.delta(h[active], vectors[active])
        else:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new
