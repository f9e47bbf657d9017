"""MLP keys at the subject's last token (MEMIT's k), and the residual stream there.

An edit's key at layer l is the input of that layer's output projection at the subject's
last token, averaged over the context prefixes (bare prompt ½, prefixed versions ½). Keys are re-read after every layer's
update, since updating layer l changes the keys of the layers above it.

The blocks below the lowest edit layer are never edited, so their output for the edit's rows
is the same in every one of those reads: `lower_states` computes it once and `read_rows`
replays it (bit-identical to running those blocks again, at a fraction of the cost).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kebench.hooks import StopForward, block_hidden, block_list, capture_block_output, hooks, replay_from, run_until_stopped
from editors.memit.prompts import EditBatch
from kebench.models.loaded import LoadedModel
from kebench.progress import progress_bar


@dataclass
class LowerStates:
    """Output of block `layer` for the rewrite rows, one tensor per pass of `read_rows`."""

    layer: int
    rows_per_pass: int
    chunks: list[torch.Tensor]
    tuple_out: bool


def count_passes(batch: EditBatch, rows_per_pass: int) -> int:
    """How many forward passes one `read_rows` over `batch` takes."""
    return len(_passes(batch, rows_per_pass))


def _passes(batch: EditBatch, rows_per_pass: int) -> list[tuple[torch.Tensor, int]]:
    """The rewrite rows of each forward pass and the width they are cut to."""
    rows = batch.rewrite_rows
    parts = [rows[start : start + rows_per_pass] for start in range(0, len(rows), rows_per_pass)]
    return [(part, int(batch.last[part].max()) + 1) for part in parts]


@torch.no_grad()
def lower_states(lm: LoadedModel, batch: EditBatch, layer: int, rows_per_pass: int = 64) -> LowerStates:
    """Block `layer`'s output for every rewrite row (to replay in `read_rows`); `layer` must lie
    below every layer that will be edited while the states are in use."""
    blocks, _ = block_list(lm.model, lm.adapter.layer_name(layer))
    chunks, tuple_out = [], False
    passes = _passes(batch, rows_per_pass)
    # a quarter of an hour at 10k CounterFact edits on one CPU thread: show progress
    with progress_bar(f"block outputs below the edit layers (0..{layer})", len(passes)) as bar:
        for part, width in passes:
            h, tuple_out = capture_block_output(
                lm.model, blocks, layer,
                input_ids=batch.input_ids[part, :width].to(lm.device),
                attention_mask=batch.attention_mask[part, :width].to(lm.device),
                use_cache=False,
            )
            chunks.append(h)
            bar.advance()
    return LowerStates(layer, rows_per_pass, chunks, tuple_out)


@torch.no_grad()
def read_rows(
    lm: LoadedModel,
    batch: EditBatch,
    key_layer: int,
    out_layer: int | None = None,
    rows_per_pass: int = 64,
    lower: LowerStates | None = None,
    on_pass: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """At every rewrite row's lookup: the key at `key_layer` ([n_rows, d_ff], float64) and, if
    `out_layer` is given, the residual after block `out_layer` ([n_rows, d]).

    KL rows are ignored. The forward stops after the last module read. With `lower` (from
    `lower_states`, same batch and rows_per_pass, below `key_layer`), blocks up to `lower.layer`
    are replayed instead of run. `on_pass` is called after each pass of rows (progress).
    """
    adapter = lm.adapter
    if lower is not None and (lower.layer >= key_layer or lower.rows_per_pass != rows_per_pass):
        raise ValueError(f"lower states of block {lower.layer} (rows_per_pass {lower.rows_per_pass}) cannot serve "
                         f"a read at layer {key_layer} with rows_per_pass {rows_per_pass}")
    found_keys: list[torch.Tensor] = []
    found_out: list[torch.Tensor] = []
    current: dict[str, torch.Tensor] = {}

    def read_key(_module, args):
        found_keys.append(args[0][current["r"], current["c"]].detach().to(torch.float64).cpu())
        if out_layer is None:
            raise StopForward

    def read_out(_module, _args, output):
        found_out.append(block_hidden(output)[current["r"], current["c"]].detach().float().cpu())
        raise StopForward

    handles = [adapter.mlp_out(key_layer).register_forward_pre_hook(read_key)]
    if out_layer is not None:
        if out_layer < key_layer:
            raise ValueError(f"out_layer {out_layer} is below key_layer {key_layer}")
        handles.append(adapter.layer(out_layer).register_forward_hook(read_out))
    blocks = block_list(lm.model, adapter.layer_name(lower.layer))[0] if lower is not None else None
    with hooks(*handles):
        for i, (part, width) in enumerate(_passes(batch, rows_per_pass)):
            current["r"] = torch.arange(len(part), device=lm.device)
            current["c"] = batch.lookup[part].to(lm.device)
            replay = (
                replay_from(blocks, lower.layer, lambda h=lower.chunks[i]: h, lower.tuple_out)
                if lower is not None else contextlib.nullcontext()
            )
            with replay:
                run_until_stopped(
                    lm.model,
                    input_ids=batch.input_ids[part, :width].to(lm.device),
                    attention_mask=batch.attention_mask[part, :width].to(lm.device),
                )
            if on_pass is not None:
                on_pass()
    return torch.cat(found_keys), (torch.cat(found_out) if out_layer is not None else None)


def edit_columns(batch: EditBatch, row_values: torch.Tensor, per_prefix: bool) -> torch.Tensor:
    """The least-squares columns built from per-row keys or residuals (rewrite rows, in order).

    per_prefix=False (MEMIT): one column per edit, the weighted average over its prefixes.
    per_prefix=True: one column per row scaled by √weight, so Σ‖ΔW k − r‖² is the weighted
    sum over every prefixed version rather than the error of the averaged key.
    """
    rows = batch.rewrite_rows
    weight = batch.weight[rows].to(row_values.dtype)
    if per_prefix:
        return row_values * weight.sqrt()[:, None]
    return weighted_mean_per_edit(row_values, batch.edit[rows], batch.weight[rows], batch.n_edits)


def edit_keys(
    lm: LoadedModel, batch: EditBatch, layer: int, per_prefix: bool = False, rows_per_pass: int = 64,
    lower: LowerStates | None = None,
) -> torch.Tensor:
    """The key columns ([n_cols, d_ff], float64) of `batch` at `layer` (see `edit_columns`)."""
    row_keys, _ = read_rows(lm, batch, layer, None, rows_per_pass, lower)
    return edit_columns(batch, row_keys, per_prefix)


def weighted_mean_per_edit(values: torch.Tensor, edit: torch.Tensor, weight: torch.Tensor, n_edits: int) -> torch.Tensor:
    """Σ weight·row over the rows of each edit (weights sum to 1 per edit, see prompts.prefix_weights)."""
    total = torch.zeros(n_edits, values.shape[1], dtype=values.dtype)
    total.index_add_(0, edit, values * weight.to(values.dtype)[:, None])
    return total


def mean_per_edit(values: torch.Tensor, edit: torch.Tensor, n_edits: int) -> torch.Tensor:
    """Plain average of the rows of `values` that belong to the same edit."""
    total = torch.zeros(n_edits, values.shape[1], dtype=values.dtype)
    total.index_add_(0, edit, values)
    count = torch.bincount(edit, minlength=n_edits).clamp(min=1).to(values.dtype)
    return total / count[:, None]
