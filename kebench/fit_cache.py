"""A disk cache of per-group fitting results (MEMIT/AlphaEdit target values, MeG neurons).

Fitting is most of an editor's time (hours at 1,000 edits on a CPU). What a group's fit
depends on is fully known: the model's current weights (exact bytes, so a sequentially edited
model never hits the unedited model's entries), the device, the fitting knobs and the group's
token rows. Keying on all of it makes the cache safe to share: MEMIT and AlphaEdit in batch
mode on the same cases fit once, MeG's ablations reuse the main run's neurons, and an
interrupted 1,000-edit fit resumes from its last finished group instead of from zero.
A file that is unreadable or whose content does not match its key is ignored and refitted.

Several processes may share one cache and split a long fit between them (two `kebench run`s
of MEMIT and AlphaEdit on the same cases, say): a process `claim`s a group before fitting it
(an exclusive OS file lock, `filelock`, on a `.lock` file beside the entry), other processes fit
the unclaimed groups first and then `wait_for` the claimed ones. The operating system drops a
claim when its process ends, however it ends, so a dead process's claim is never waited on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from kebench.io import atomic_torch_save
from kebench.models.embedded import cache_root

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class Lookup:
    """What `FitCache.lookup` found: the entry, or the claim to fit it (`held`: release it after
    saving), or neither with `deferred` (another live process is fitting it)."""

    found: dict[str, Any] | None = None
    held: bool = False
    deferred: bool = False


@dataclass
class Resolved:
    """What `resolve_fit` returns: the entry's tensors, whether they were read from the cache, and
    what the fit took (now, or when the cached entry was fitted)."""

    tensors: dict[str, Any]
    cached: bool
    seconds: float


def resolve_fit(
    cache: FitCache | None, key: str | None, fields: tuple[str, ...], fit: Callable[[], Mapping[str, torch.Tensor]],
    wait: bool,
) -> Resolved | None:
    """One group's fit: read from `cache`, else `fit()` under the claim, then saved and the claim
    released (also if `fit` raises). None, having done nothing, when another live process holds
    the claim and `wait` is off: the caller fits its other groups first and asks again with `wait`.
    Without a cache (`cache` None) this is just `fit()`."""
    look = cache.lookup(key, fields, wait) if cache is not None else Lookup()
    if look.deferred:
        return None
    if look.found is not None:
        return Resolved(look.found, True, FitCache.fit_seconds(look.found))
    start = time.perf_counter()
    try:
        tensors = dict(fit())
        seconds = time.perf_counter() - start
        if cache is not None:
            cache.save(key, tensors, seconds=seconds)
    finally:
        if look.held:
            cache.release(key)
    return Resolved(tensors, False, seconds)


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
        self.poll_seconds = 5.0  # how often `wait_for` looks again
        self._claims: dict[str, FileLock] = {}  # the claims this cache holds, by key

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

    def lookup(self, key: str, fields: tuple[str, ...] = (), wait: bool = True) -> Lookup:
        """The entry for `key` if saved; else the claim to fit it. If another live process holds
        the claim: with `wait`, its entry once saved (or the claim, if it died without saving);
        without, a deferred lookup (fit the other groups first, then look again with `wait`)."""
        existed = self.path(key).is_file()
        found = self.wait_for(key, fields) if wait else self.load(key, fields)
        if found is not None:
            return Lookup(found)
        if not self.claim(key):
            if not wait:
                return Lookup(deferred=True)
            return Lookup(self.wait_for(key, fields))  # claimed by a third process meanwhile: None → fit unclaimed
        if not existed and self.path(key).is_file():  # saved by another process between our look and our claim
            found = self.load(key, fields)
            if found is not None:
                self.release(key)
                return Lookup(found)
        return Lookup(held=True)

    def _lock(self, key: str) -> Path:
        return self.path(key).with_suffix(".lock")

    def claim(self, key: str) -> bool:
        """Take the exclusive right to fit `key`'s group; False if a live process (or another claim
        of this one) holds it. The lock file stays after `release`; only the lock on it matters."""
        if key in self._claims:
            return False
        lock_path = self._lock(key)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        self._claims[key] = lock
        return True

    def release(self, key: str) -> None:
        """Give up a claim taken with `claim` (after saving, or after a failed fit)."""
        lock = self._claims.pop(key, None)
        if lock is not None:
            lock.release()

    def claimed(self, key: str) -> bool:
        """Whether a live process (this one included) holds `key`'s claim."""
        if key in self._claims:
            return True
        lock_path = self._lock(key)
        if not lock_path.exists():
            return False
        probe = FileLock(str(lock_path))
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        probe.release()
        return False

    def wait_for(self, key: str, fields: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """`key`'s entry once the process that claimed it has saved it; None if that process
        gave up or died without saving (the caller then fits the group itself)."""
        while self.claimed(key) and not self.path(key).is_file():
            time.sleep(self.poll_seconds)
        return self.load(key, fields)
