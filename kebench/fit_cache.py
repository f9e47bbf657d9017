"""A disk cache of per-group fitting results (MEMIT/AlphaEdit target values, MeG neurons).

Fitting is most of an editor's time (hours at 1,000 edits on a CPU). What a group's fit
depends on is fully known: the model's current weights (exact bytes, so a sequentially edited
model never hits the unedited model's entries), the device, the fitting knobs and the group's
token rows. Keying on all of it makes the cache safe to share: MEMIT and AlphaEdit in batch
mode on the same cases fit once, MeG's ablations reuse the main run's neurons, and an
interrupted 1,000-edit fit resumes from its last finished group instead of from zero.
A file that is unreadable or whose content does not match its key is ignored and refitted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kebench.io import atomic_torch_save
from kebench.models.embedded import cache_root

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class FitCache:
    """Tensors per (kind, weights, device, settings, input tensors), under $KEBENCH_CACHE/fits/<kind>."""

    def __init__(self, kind: str, weights_sha256: str, device: str, cache_dir: str | Path | None = None) -> None:
        base = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "fits"
        self.root = base / kind
        self.kind = kind
        self.weights_sha256 = weights_sha256
        self.device = device
        self.hits = 0
        self.misses = 0

    def key(self, settings: Mapping[str, Any], inputs: Mapping[str, torch.Tensor]) -> str:
        """sha256 over everything a group's fit depends on (`settings` must be JSON-able)."""
        h = hashlib.sha256()
        meta = {"format": FORMAT_VERSION, "kind": self.kind, "weights_sha256": self.weights_sha256,
                "device": self.device, "settings": dict(settings)}
        h.update(json.dumps(meta, sort_keys=True, default=str).encode())
        for name in sorted(inputs):
            t = inputs[name].detach().cpu().contiguous()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:".encode())
            if t.numel():
                h.update(t.view(torch.uint8).numpy().data)
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / self.weights_sha256[:16] / f"{key[:32]}.pt"

    def load(self, key: str, fields: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """The stored entries (tensors, and "meta" if saved), or None (counted as a miss) if absent,
        unreadable, not this key's, or missing one of the tensor `fields`."""
        path = self.path(key)
        found = None
        if path.is_file():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                if blob.get("key") == key and all(isinstance(blob.get(f), torch.Tensor) for f in fields):
                    found = {k: v for k, v in blob.items() if k != "key"}
                else:
                    log.warning("ignoring cached fit %s: it does not match its key; refitting", path)
            except Exception as exc:  # truncated or foreign file
                log.warning("ignoring cached fit %s: unreadable (%s); refitting", path, type(exc).__name__)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def save(
        self, key: str, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None,
        seconds: float | None = None,
    ) -> None:
        """Store `tensors` (and a small JSON-able `meta`, e.g. training statistics) under `key`;
        `seconds`, what the fit took, is kept in the meta so a later hit can report it (`fit_seconds`)."""
        blob: dict[str, Any] = {"key": key, **{k: v.detach().cpu() for k, v in tensors.items()}}
        if meta is not None or seconds is not None:
            blob["meta"] = {**(meta or {}), **({"seconds": seconds} if seconds is not None else {})}
        atomic_torch_save(self.path(key), blob)

    @staticmethod
    def fit_seconds(found: Mapping[str, Any]) -> float:
        """What a loaded entry took when it was fitted; 0 for entries saved without it."""
        return float((found.get("meta") or {}).get("seconds", 0.0))
