"""Edit rows cut at their lookup token, so the value fit runs only the positions δ can change.

δ is added at the subject's last token; under causal attention every earlier position (the
context prefix and the prompt up to the subject) computes the same states at every step of
the fit. Their attention keys and values are computed once, left-padded into a per-layer
cache, and each fitting step runs the suffix alone: the lookup token, the rest of the prompt
and the teacher-forced target. On CounterFact that is about 5 of 26 padded positions per row.
The arithmetic is the full rows' up to summation order (tests/editors/test_memit.py checks
both paths agree).

Models whose forward takes no key/value cache (`cache`, before transformers 5.2x
`past_key_values`) or no `position_ids` are run on whole rows (`split=False`: every row cut
at 0, no cache).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from editors.memit.prompts import EditBatch
from kebench.hooks import head_at


@dataclass
class SuffixRows:
    """Every row of a batch from column `start` on, plus what its earlier columns leave behind."""

    start: torch.Tensor  # [R] first column kept (the lookup, or 0 when not split)
    input_ids: torch.Tensor  # [R, S] right-padded
    mask: torch.Tensor  # [R, S]
    position_ids: torch.Tensor  # [R, S]
    prefix_cols: torch.Tensor  # [R, P] source column of each left-padded prefix slot, < 0 on padding (P = 0 when not split)
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [R, heads, P, head_dim]
    cache_arg: str | None = None  # the model forward's name for the cache (see cache_argument)

    @classmethod
    def cut(cls, batch: EditBatch, split: bool) -> "SuffixRows":
        """The column layout (no model run yet): prefixes right-aligned, suffixes left-aligned."""
        n_rows, width = batch.input_ids.shape
        start = batch.lookup.clone() if split else torch.zeros(n_rows, dtype=torch.long)
        p, s = int(start.max()), int((batch.last - start).max()) + 1
        cols = torch.arange(s)[None, :] + start[:, None]
        real = cols <= batch.last[:, None]
        ids = batch.input_ids.gather(1, cols.clamp(max=width - 1)) * real
        prefix_cols = torch.arange(p)[None, :] - (p - start[:, None])
        return cls(start, ids, real.long(), cols, prefix_cols, [])

    @property
    def prefix_len(self) -> int:
        return self.prefix_cols.shape[1]

    def fill_prefix(self, model: torch.nn.Module, batch: EditBatch, device: torch.device, slack: float = 0.15) -> None:
        """Run every row's prefix through `model` and keep the per-layer keys and values, left-padded
        to the longest prefix. Padding every row to the longest prefix wastes ~40% of the pass on
        CounterFact (a group's rows differ in context prefix and subject position), so rows run in
        passes of like prefix length, each padded only within itself: rows sorted by length join a
        pass while its padding stays under `slack` of its real positions. The LM head projects one
        position only."""
        self.cache_arg = cache_argument(model)
        p, n_rows = self.prefix_len, self.start.shape[0]
        one = torch.zeros(1, dtype=torch.long, device=device)
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for rows in _passes(self.start, slack):
            width = int(self.start[rows].max())
            cols = self.prefix_cols[rows, p - width:]
            real, positions = cols >= 0, cols.clamp(min=0)  # a row's own positions count from its first token
            inputs = {
                "input_ids": (batch.input_ids[rows].gather(1, positions) * real).to(device),
                "attention_mask": real.long().to(device),
                "position_ids": positions.to(device),
            }
            with head_at(model, one, one):
                found = _cache_tensors(model(**inputs, use_cache=True))
            if not kv:
                kv = [(k.new_zeros(n_rows, k.shape[1], p, k.shape[3]), v.new_zeros(n_rows, v.shape[1], p, v.shape[3]))
                      for k, v in found]
            at = rows.to(found[0][0].device)
            for (k_all, v_all), (k, v) in zip(kv, found, strict=True):
                k_all[at, :, p - width:] = k
                v_all[at, :, p - width:] = v
        self.kv = kv

    def inputs(self, rows: torch.Tensor, width: int, device: torch.device) -> dict[str, object]:
        """Model inputs for `rows`' suffixes trimmed to `width` columns, with their prefix cache."""
        p = int(self.start[rows].max()) if self.prefix_len else 0  # drop prefix columns all kept rows pad
        mask = torch.cat([(self.prefix_cols[rows, self.prefix_len - p:] >= 0).long(), self.mask[rows, :width]], dim=1)
        out: dict[str, object] = {"input_ids": self.input_ids[rows, :width].to(device), "attention_mask": mask.to(device)}
        if p:  # positions continue each row's own prefix (the default 0.. counts from the padded cache)
            out["position_ids"] = self.position_ids[rows, :width].to(device)
            cache = DynamicCache()
            dev_rows = rows.to(self.kv[0][0].device)
            for i, (k, v) in enumerate(self.kv):
                cache.update(k[dev_rows, :, k.shape[2] - p:], v[dev_rows, :, v.shape[2] - p:], i)
            out[self.cache_arg] = cache
            out["use_cache"] = True
        else:
            out["use_cache"] = False
        return out

    def width(self, batch: EditBatch, rows: torch.Tensor) -> int:
        return int((batch.last[rows] - self.start[rows]).max()) + 1


def _passes(start: torch.Tensor, slack: float) -> list[torch.Tensor]:
    """Rows (those with a prefix) split into passes of like prefix length: sorted by length, a row
    joins the current pass while the pass's padded positions stay within (1 + slack) × its real ones."""
    order = torch.sort(start, stable=True).indices
    order = order[start[order] > 0]
    passes: list[list[int]] = []
    real = 0
    for row in order.tolist():
        length = int(start[row])
        if passes and (len(passes[-1]) + 1) * length <= (1 + slack) * (real + length):
            passes[-1].append(row)
            real += length
        else:
            passes.append([row])
            real = length
    return [torch.tensor(rows) for rows in passes]


def _cache_tensors(output: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer keys and values from a forward's cache (transformers' Cache layouts)."""
    cache = getattr(output, "cache", None)
    cache = cache if cache is not None else getattr(output, "past_key_values", None)
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    raise TypeError(f"cannot read keys/values from a {type(cache).__name__}")


def cache_argument(model: torch.nn.Module) -> str | None:
    """The name under which the model's forward takes a key/value cache, if it takes one."""
    params = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def takes_prefix_cache(model: torch.nn.Module) -> bool:
    """Whether the model's forward accepts a key/value cache with explicit position ids."""
    return cache_argument(model) is not None and "position_ids" in inspect.signature(model.forward).parameters


def edits_by_suffix_width(batch: EditBatch) -> torch.Tensor:
    """Edit indices ordered by their longest suffix (stable), so that groups fitted together pad
    least: on ZsRE a group of 32 consecutive edits pads its suffixes to 15 columns on average,
    one of 32 like-length edits to 10. Each edit's fit does not depend on its group."""
    width = torch.zeros(batch.n_edits, dtype=torch.long)
    width.scatter_reduce_(0, batch.edit, batch.last - batch.lookup + 1, reduce="amax")
    return torch.sort(width, stable=True).indices
