"""MLP keys at the subject's last token (MEMIT's k), and the residual stream there.

An edit's key at layer l is the input of that layer's output projection at the subject's
last token, averaged over the context prefixes (bare prompt ½, prefixed versions ½). Keys are re-read after every layer's
update, since updating layer l changes the keys of the layers above it.
"""

from __future__ import annotations

import torch

from kebench.hooks import StopForward, block_hidden, hooks, run_until_stopped
from editors.memit.prompts import EditBatch
from kebench.models.loaded import LoadedModel


@torch.no_grad()
def read_rows(
    lm: LoadedModel,
    batch: EditBatch,
    key_layer: int,
    out_layer: int | None = None,
    rows_per_pass: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """At every rewrite row's lookup: the key at `key_layer` ([n_rows, d_ff], float64) and, if
    `out_layer` is given, the residual after block `out_layer` ([n_rows, d]).

    KL rows are ignored. The forward stops after the last module read.
    """
    adapter = lm.adapter
    rows = batch.rewrite_rows
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
    with hooks(*handles):
        for start in range(0, len(rows), rows_per_pass):
            part = rows[start : start + rows_per_pass]
            width = int(batch.last[part].max()) + 1
            current["r"] = torch.arange(len(part), device=lm.device)
            current["c"] = batch.lookup[part].to(lm.device)
            run_until_stopped(
                lm.model,
                input_ids=batch.input_ids[part, :width].to(lm.device),
                attention_mask=batch.attention_mask[part, :width].to(lm.device),
            )
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
    lm: LoadedModel, batch: EditBatch, layer: int, per_prefix: bool = False, rows_per_pass: int = 64
) -> torch.Tensor:
    """The key columns ([n_cols, d_ff], float64) of `batch` at `layer` (see `edit_columns`)."""
    row_keys, _ = read_rows(lm, batch, layer, None, rows_per_pass)
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
