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

    @property
    def prefix_mask(self) -> torch.Tensor:
        return (self.prefix_cols >= 0).long()

    def prefix_inputs(self, batch: EditBatch) -> dict[str, torch.Tensor]:
        """Model inputs for the left-padded prefixes (positions counted from each row's first token)."""
        positions = self.prefix_cols.clamp(min=0)
        ids = batch.input_ids.gather(1, positions) * self.prefix_mask
        return {"input_ids": ids, "attention_mask": self.prefix_mask, "position_ids": positions}

    def keep_prefix(self, model: torch.nn.Module, output: object) -> None:
        """Store the prefix pass's per-layer keys and values (transformers' Cache layouts) and the
        name under which `model` takes them back."""
        self.cache_arg = cache_argument(model)
        cache = getattr(output, "cache", None)
        cache = cache if cache is not None else getattr(output, "past_key_values", None)
        if hasattr(cache, "layers"):
            self.kv = [(layer.keys, layer.values) for layer in cache.layers]
        elif hasattr(cache, "key_cache"):
            self.kv = list(zip(cache.key_cache, cache.value_cache))
        else:
            raise TypeError(f"cannot read keys/values from a {type(cache).__name__}")

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
