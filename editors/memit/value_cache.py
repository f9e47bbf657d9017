"""A disk cache of fitted target values, one file per group of edits fitted together.

Fitting δ is most of MEMIT's and AlphaEdit's editing time (hours at 1,000 edits on a CPU).
What a group's δ depends on is fully known: the model's current weights (exact bytes, so a
sequentially edited model never hits the unedited model's entries), the edit layer, the
fitting knobs, the group's token rows and the device. Keying on all of it makes the cache
safe to share: MEMIT and AlphaEdit in batch mode on the same cases fit once, and an
interrupted 1,000-edit batch resumes from its last finished group instead of from zero.
A file that is unreadable or whose content does not match its key is ignored and refitted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from kebench.io import atomic_torch_save
from kebench.models.embedded import cache_root

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FIELDS = ("delta", "row_h", "converged", "steps", "nll_start", "nll_end")


def values_dir(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else $KEBENCH_CACHE/values, else ~/.cache/kebench/values."""
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "values"


class ValueCache:
    """Fitted δ per (weights, layer, config, group rows, device); see the module docstring."""

    def __init__(self, weights_sha256: str, device: str, cache_dir: str | Path | None = None) -> None:
        self.root = values_dir(cache_dir)
        self.weights_sha256 = weights_sha256
        self.device = device
        self.hits = 0
        self.misses = 0

    def key(self, layer: int, cfg: object, group: object) -> str:
        """sha256 over everything the group's fit depends on."""
        h = hashlib.sha256()
        meta = {
            "format": FORMAT_VERSION,
            "weights_sha256": self.weights_sha256,
            "device": self.device,
            "layer": layer,
            "config": asdict(cfg),
        }
        h.update(json.dumps(meta, sort_keys=True).encode())
        for name in ("input_ids", "attention_mask", "edit", "lookup", "last", "is_kl", "tgt_row", "tgt_col", "tgt_id"):
            t = getattr(group, name).detach().cpu().contiguous()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:".encode())
            h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / self.weights_sha256[:16] / f"{key[:32]}.pt"

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            ok = blob.get("key") == key and all(isinstance(blob.get(f), torch.Tensor) for f in FIELDS)
        except Exception as exc:  # truncated or foreign file: refit
            log.warning("ignoring cached target values %s: unreadable (%s); refitting", path, type(exc).__name__)
            ok = False
        if not ok:
            self.misses += 1
            return None
        self.hits += 1
        return {f: blob[f] for f in FIELDS}

    def save(self, key: str, values: dict[str, torch.Tensor]) -> None:
        atomic_torch_save(self.path(key), {"key": key, **{f: values[f].detach().cpu() for f in FIELDS}})
