"""Target values: the residual-stream change at the last edit layer that makes each edit true.

For every edit, a vector δ is added to the output of block L at the subject's last token
(in all of the edit's prefixed prompts and its KL prompt) and optimised so the model
predicts `target_new` (MEMIT's z = h + δ). The loss per edit is

    NLL(target | prefixed prompts)              mean over prefixes of the per-token NLL
  + kl_factor · KL(p_δ ‖ p₀)                    at the last token of "{subject} is a" (MEMIT's direction)
  + weight_decay · ‖δ‖ / ‖h‖²                   MEMIT's form (norm over squared norm)

with ‖δ‖ clamped to clamp_norm_factor · ‖h‖ after each step (h: the unedited residual of
the bare prompt).

Efficiency, since this phase dominates editing time on a CPU:
- edits are fitted together: one forward/backward for a whole batch, a [n_edits, d] δ in
  which each row touches only its own edit's rows; Adam runs per row (own step count),
  so batching changes nothing about each edit's trajectory;
- an edit leaves the batch as soon as its target NLL is below `stop_nll` (early stop);
- blocks 0..L run once without grad: their output is cached and replayed, so each step runs
  only blocks L+1.. with grad w.r.t. δ alone (the model's parameters are frozen);
- positions before the lookup never see δ: their keys/values are cached once (rows of like
  prefix length in passes of their own, not all padded to the longest) and each step runs only
  the suffix from the lookup on (editors/memit/suffix.py), edits of like suffix length fitted
  together;
- the LM head projects only the target and KL positions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from kebench.hooks import block_hidden, block_list, frozen, head_at, hooks, replay_from
from editors.memit.hparams import LocateEditHParams
from editors.memit.keys import mean_per_edit
from editors.memit.prompts import EditBatch
from editors.memit.suffix import SuffixRows, edits_by_suffix_width, takes_prefix_cache
from kebench.editor import check_finite
from kebench.fit_cache import FitCache, resolve_fit
from kebench.models.loaded import LoadedModel
from kebench.optim import RowAdam
from kebench.progress import progress_bar


#: The hyperparameters a target-value fit reads (LocateEditHParams' names, MEMIT's); with the
#: layer and the group's token rows they are its cache key.
FIT_SETTINGS = ("v_lr", "v_num_grad_steps", "v_weight_decay", "kl_factor", "clamp_norm_factor", "v_stop_nll",
                "v_edits_per_batch")


@dataclass
class TargetValues:
    """Fitted residual deltas at layer `layer`, per edit, and what fitting them took."""

    layer: int
    delta: torch.Tensor  # [n_edits, d] wanted change of block L's output at the lookup
    row_h: torch.Tensor  # [n_rows, d] unedited block-L output at each row's lookup (KL rows too)
    converged: torch.Tensor  # [n_edits] bool: target NLL fell below v_stop_nll
    steps: torch.Tensor  # [n_edits] gradient steps taken
    nll_start: torch.Tensor  # [n_edits] target NLL before fitting
    nll_end: torch.Tensor  # [n_edits] target NLL at the last evaluated step
    seconds: float
    groups: int = 0  # groups of edits fitted together
    cached_groups: int = 0  # of which read from the value cache (their fitting time is not in `seconds`)
    cached_seconds: float = 0.0  # what the cached groups took when they were fitted (where recorded)

    def stats(self) -> dict[str, float]:
        return {
            "v_groups": self.groups,
            "v_cached_groups": self.cached_groups,
            "v_cached_seconds": self.cached_seconds,
            "v_converged_frac": float(self.converged.float().mean()),
            "v_mean_steps": float(self.steps.float().mean()),
            "v_nll_start": float(self.nll_start.mean()),
            "v_nll_end": float(self.nll_end.mean()),
            "v_delta_norm": float(self.delta.norm(dim=1).mean()),
        }


def fit_target_values(
    lm: LoadedModel, batch: EditBatch, layer: int, hp: LocateEditHParams, cache: FitCache | None = None,
    split: bool | None = None,
) -> TargetValues:
    """Fit δ for every edit of `batch` at the output of block `layer`, `v_edits_per_batch` at a time.

    `split`: run each step on the rows from their lookup on, the earlier positions cached
    (editors/memit/suffix.py; the same δ, several times faster); None: wherever the model's
    forward takes a key/value cache and position ids.
    With a `cache`, each group's fit is looked up first and stored after (kebench.fit_cache)."""
    start = time.perf_counter()
    if split is None:
        split = takes_prefix_cache(lm.model)
    n, d = batch.n_edits, lm.adapter.hidden_size
    out = TargetValues(
        layer, torch.zeros(n, d), torch.zeros(len(batch.edit), d), torch.zeros(n, dtype=torch.bool),
        torch.zeros(n, dtype=torch.long), torch.zeros(n), torch.zeros(n), 0.0,
    )
    size = max(1, hp.v_edits_per_batch)
    order = edits_by_suffix_width(batch) if split else torch.arange(n)
    groups = [order[first : first + size] for first in range(0, n, size)]
    with frozen(lm.model), progress_bar(f"fitting target values at layer {layer}", n) as bar:
        # groups another process has claimed are left to the end, then read once it has saved them
        deferred = [g for g in groups if not _resolve_group(lm, batch, g, layer, hp, out, split, cache, bar, wait=False)]
        for edits in deferred:
            _resolve_group(lm, batch, edits, layer, hp, out, split, cache, bar, wait=True)
    out.seconds = time.perf_counter() - start
    return out


def _resolve_group(
    lm: LoadedModel, batch: EditBatch, edits: torch.Tensor, layer: int, hp: LocateEditHParams, out: TargetValues,
    split: bool, cache: FitCache | None, bar: object, wait: bool,
) -> bool:
    """Fill `out` for one group: from the cache, else by fitting it (under a claim when cached).
    Returns False, leaving `out` as it was, if another process is fitting it and `wait` is off."""
    rows = batch.rows_of(edits)
    key = _cache_key(cache, layer, hp, batch.select(edits)) if cache is not None else None
    per_edit = {"delta": out.delta, "converged": out.converged, "steps": out.steps,
                "nll_start": out.nll_start, "nll_end": out.nll_end}

    def fit() -> dict[str, torch.Tensor]:
        _fit_group(lm, batch, edits, layer, hp, out, split)
        return {**{k: t[edits] for k, t in per_edit.items()}, "row_h": out.row_h[rows]}

    got = resolve_fit(cache, key, CACHED_FIELDS, fit, wait)
    if got is None:
        return False
    if got.cached:
        out.cached_groups += 1
        out.cached_seconds += got.seconds
        for name, t in per_edit.items():
            t[edits] = got.tensors[name].to(t.dtype)
        out.row_h[rows] = got.tensors["row_h"].float()
    out.groups += 1
    bar.advance(len(edits))
    return True


CACHED_FIELDS = ("delta", "row_h", "converged", "steps", "nll_start", "nll_end")
_ROW_TENSORS = ("input_ids", "attention_mask", "edit", "lookup", "last", "is_kl", "tgt_row", "tgt_col", "tgt_id")


def _cache_key(cache: FitCache, layer: int, hp: LocateEditHParams, group: EditBatch) -> str:
    settings = {"layer": layer, **{name: getattr(hp, name) for name in FIT_SETTINGS}}
    return cache.key(settings, {name: getattr(group, name) for name in _ROW_TENSORS})


def _fit_group(
    lm: LoadedModel, full: EditBatch, edits: torch.Tensor, layer: int, hp: LocateEditHParams, out: TargetValues,
    split: bool,
) -> None:
    model, dev = lm.model, lm.device
    batch = full.select(edits)
    rows_full = full.rows_of(edits)
    blocks, index = block_list(model, lm.adapter.layer_name(layer))
    suffix = SuffixRows.cut(batch, split)
    h, tuple_out, logp0 = _reference_pass(lm, batch, suffix, layer)
    at_lookup = batch.lookup - suffix.start  # the lookup's column within each suffix
    out.row_h[rows_full] = h[torch.arange(len(batch.edit), device=dev), at_lookup.to(dev)].float().cpu()

    rw = batch.rewrite_rows
    first_row = torch.full((batch.n_edits,), len(batch.edit), dtype=torch.long)
    first_row.scatter_reduce_(0, batch.edit[rw], rw, reduce="amin")  # bare-prompt row of each edit
    h_norm = out.row_h[rows_full[first_row]].norm(dim=1)  # ‖h‖ of the unedited bare prompt
    n_tgt = batch.n_target_tokens().clamp(min=1).float()
    kl_init = {int(batch.edit[r]): logp0[i] for i, r in enumerate(batch.kl_rows.tolist())}

    delta = torch.zeros(batch.n_edits, h.shape[-1])
    adam = RowAdam(delta, hp.v_lr)
    active = torch.arange(batch.n_edits)
    steps = torch.zeros(batch.n_edits, dtype=torch.long)
    nll_start = torch.zeros(batch.n_edits)
    nll_last = torch.zeros(batch.n_edits)
    converged = torch.zeros(batch.n_edits, dtype=torch.bool)

    for it in range(hp.v_num_grad_steps):
        sub = batch.select(active)
        rows = batch.rows_of(active)
        width = suffix.width(batch, rows)
        offset = suffix.start[rows]
        d_act = delta[active].clone().requires_grad_(True)
        base = h[rows.to(dev), :width]
        at = (torch.arange(len(rows), device=dev), at_lookup[rows].to(dev))

        def replayed() -> torch.Tensor:
            return base.index_put(at, d_act.to(base.dtype).to(dev)[sub.edit.to(dev)], accumulate=True)

        kl_rows = sub.kl_rows
        head_rows = torch.cat([sub.tgt_row, kl_rows]).to(dev)
        head_cols = torch.cat([sub.tgt_col - offset[sub.tgt_row], sub.last[kl_rows] - offset[kl_rows]]).to(dev)
        with replay_from(blocks, index, replayed, tuple_out), head_at(model, head_rows, head_cols):
            logits = model(**suffix.inputs(rows, width, dev)).logits
        # log-probabilities stay on the model's device (rows × vocabulary); only per-row sums come back
        logp = torch.log_softmax(logits.float(), dim=-1)
        m = len(sub.tgt_row)
        token_nll = -logp[torch.arange(m, device=dev), sub.tgt_id.to(dev)]
        row_nll = torch.zeros(len(sub.edit), device=dev).index_add(0, sub.tgt_row.to(dev), token_nll).cpu()
        row_nll = row_nll / n_tgt[active][sub.edit]
        nll = mean_per_edit(row_nll[sub.rewrite_rows, None], sub.edit[sub.rewrite_rows], len(active))[:, 0]

        kl = torch.zeros(len(active))
        if len(kl_rows):
            local = sub.edit[kl_rows]  # one KL row per edit
            terms = [(lp.exp() * (lp - kl_init[int(active[j])])).sum() for lp, j in zip(logp[m:], local.tolist())]
            kl = kl.index_put((local,), torch.stack(terms).cpu())

        nll_d = nll.detach()
        if it == 0:
            nll_start[active] = nll_d
        nll_last[active] = nll_d
        done = nll_d < hp.v_stop_nll
        converged[active[done]] = True
        if done.all() or it == hp.v_num_grad_steps - 1:
            break
        decay = hp.v_weight_decay * d_act.norm(dim=1) / h_norm[active] ** 2
        loss = (nll + hp.kl_factor * kl + decay)[~done].sum()
        loss.backward()
        grad = check_finite("target value gradient", d_act.grad.detach())
        keep = active[~done]
        adam.step(grad[~done], keep)
        steps[keep] += 1
        _clamp_rows(delta, keep, hp.clamp_norm_factor * h_norm[keep])
        active = keep

    out.delta[edits] = delta
    out.converged[edits] = converged
    out.steps[edits] = steps
    out.nll_start[edits] = nll_start
    out.nll_end[edits] = nll_last


@torch.no_grad()
def _reference_pass(
    lm: LoadedModel, batch: EditBatch, suffix: SuffixRows, layer: int
) -> tuple[torch.Tensor, bool, torch.Tensor]:
    """Block `layer`'s output at the suffix positions (to replay), its return type, and the
    unedited log-probabilities at the KL rows' last tokens; fills `suffix`'s prefix cache."""
    model, dev = lm.model, lm.device
    if suffix.prefix_len:
        suffix.fill_prefix(model, batch, dev)
    seen: dict[str, object] = {}

    def keep(_module, _args, output):
        seen["h"] = block_hidden(output).detach()
        seen["tuple"] = isinstance(output, tuple)

    all_rows = torch.arange(len(batch.edit))
    kl_rows = batch.kl_rows
    cols = batch.last[kl_rows] - suffix.start[kl_rows]
    if len(kl_rows) == 0:  # the head still needs one position to project
        kl_rows, cols = torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    with hooks(lm.adapter.layer(layer).register_forward_hook(keep)), head_at(model, kl_rows.to(dev), cols.to(dev)):
        logits = model(**suffix.inputs(all_rows, suffix.width(batch, all_rows), dev)).logits
    logp0 = torch.log_softmax(logits.float(), dim=-1)  # stays on the model's device, like the fit's log-probs
    return seen["h"], bool(seen["tuple"]), logp0[: len(batch.kl_rows)]


def _clamp_rows(delta: torch.Tensor, rows: torch.Tensor, max_norm: torch.Tensor) -> None:
    norm = delta[rows].norm(dim=1)
    scale = torch.where(norm > max_norm, max_norm / norm.clamp(min=1e-12), torch.ones_like(norm))
    delta[rows] *= scale[:, None]
