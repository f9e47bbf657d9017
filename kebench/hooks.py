"""Forward-pass plumbing for locate-then-edit methods: read keys, stop early, replay, inject.

Decoder blocks return a tensor in transformers 5 and a tuple in 4.x; indexing `[0]` on a
tensor silently takes batch item 0. Every helper here goes through `block_hidden`/
`with_block_hidden`, which handle both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


class StopForward(Exception):
    """Raised by a hook to end a forward pass once everything needed has been read."""


def block_hidden(output: Any) -> torch.Tensor:
    """The hidden state a decoder block returned (tensor, or first element of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def with_block_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """`output` with its hidden state replaced, keeping the block's return type."""
    return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden


def run_until_stopped(model: nn.Module, **inputs: Any) -> None:
    """Run the model; a StopForward raised by a hook ends the pass quietly."""
    try:
        model(**inputs, use_cache=False)
    except StopForward:
        pass


@contextlib.contextmanager
def hooks(*handles: torch.utils.hooks.RemovableHandle) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients (only the fitted delta needs them); restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


def head_at(model: nn.Module, rows: torch.Tensor, cols: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make the LM head project only hidden[rows, cols] (a flat list of positions).

    The vocabulary projection is the widest matmul of a small model; a pre-hook keeps
    whatever the model applies after the head (soft-capping, scaling).
    """
    head = model.get_output_embeddings()

    def hook(_module: nn.Module, args: tuple) -> tuple:
        return (args[0][rows, cols],) + tuple(args[1:])

    return hooks(head.register_forward_pre_hook(hook))


class _Skip(nn.Module):
    """Stand-in for a block below the replay point: hands its input on unchanged."""

    def __init__(self, like: nn.Module, tuple_out: bool) -> None:
        super().__init__()
        self.tuple_out = tuple_out
        # Some models read per-block attributes in their layer loop (e.g. sliding-window type).
        for name in ("attention_type", "layer_idx"):
            if hasattr(like, name):
                setattr(self, name, getattr(like, name))

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return (hidden_states,) if self.tuple_out else hidden_states


class _Replay(_Skip):
    """Stand-in for the top replayed block: returns `make_output()` (cached state + delta)."""

    def __init__(self, like: nn.Module, tuple_out: bool, make_output: Callable[[], torch.Tensor]) -> None:
        super().__init__(like, tuple_out)
        self.make_output = make_output

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = self.make_output()
        return (out,) if self.tuple_out else out


@contextlib.contextmanager
def replay_from(
    blocks: nn.ModuleList, layer: int, make_output: Callable[[], torch.Tensor], tuple_out: bool
) -> Iterator[None]:
    """Within the context, blocks 0..layer are not run: block `layer` returns `make_output()`.

    The model's own forward still embeds, builds masks and position embeddings, then runs
    only blocks layer+1.. on the replayed state, so no architecture code is duplicated.
    """
    originals = [blocks[i] for i in range(layer + 1)]
    try:
        for i in range(layer):
            blocks[i] = _Skip(originals[i], tuple_out)
        blocks[layer] = _Replay(originals[layer], tuple_out, make_output)
        yield
    finally:
        for i, module in enumerate(originals):
            blocks[i] = module


def block_list(model: nn.Module, layer_name: str) -> tuple[nn.ModuleList, int]:
    """The ModuleList holding decoder block `layer_name` ("model.layers.7") and its index."""
    parent, index = layer_name.rsplit(".", 1)
    blocks = model.get_submodule(parent)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"{parent} is a {type(blocks).__name__}, expected an nn.ModuleList of decoder blocks")
    return blocks, int(index)


@torch.no_grad()
def capture_block_output(model: nn.Module, blocks: nn.ModuleList, layer: int, **inputs: Any) -> tuple[torch.Tensor, bool]:
    """Output of `blocks[layer]` for a batch (to replay later with `replay_from`) and whether
    blocks return tuples; the forward stops right after that block."""
    seen: dict[str, Any] = {}

    def keep(_module: nn.Module, _args: tuple, output: Any) -> None:
        seen["h"] = block_hidden(output).detach()
        seen["tuple"] = isinstance(output, tuple)
        raise StopForward

    with hooks(blocks[layer].register_forward_hook(keep)):
        try:
            model(**inputs)
        except StopForward:
            pass
    return seen["h"], bool(seen["tuple"])
