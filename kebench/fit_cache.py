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
(an exclusive lock file beside the entry), other processes fit the unclaimed groups first and
then `wait_for` the claimed ones. A claim whose process has died (its pid gone, or now naming a process that
started later, or the claim older than the machine's last start) is stale and taken over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kebench.io import atomic_torch_save
from kebench.models.embedded import cache_root

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# a claim from another machine (its process cannot be checked) counts as stale after this long
FOREIGN_CLAIM_SECONDS = 6 * 3600


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
        """Take the exclusive right to fit `key`'s group; False if a live process holds it.
        A stale claim (its process is gone) is removed and taken over; two processes taking over
        the same stale claim at once may both fit the group: wasted work, never a wrong entry
        (the fit depends only on the key, and saves are atomic)."""
        lock = self._lock(key)
        lock.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._claim_is_stale(lock):
                    return False
                log.warning("taking over the stale claim %s (its process is gone)", lock)
                lock.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid()),
                           "time": time.time()}, f)
            return True
        return False

    def release(self, key: str) -> None:
        """Give up a claim taken with `claim` (after saving, or after a failed fit)."""
        self._lock(key).unlink(missing_ok=True)

    def claimed(self, key: str) -> bool:
        """Whether a live process (this one included) holds `key`'s claim."""
        lock = self._lock(key)
        return lock.exists() and not self._claim_is_stale(lock)

    def wait_for(self, key: str, fields: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """`key`'s entry once the process that claimed it has saved it; None if that process
        gave up or died without saving (the caller then fits the group itself)."""
        while self.claimed(key) and not self.path(key).is_file():
            time.sleep(self.poll_seconds)
        return self.load(key, fields)

    @staticmethod
    def _claim_is_stale(lock: Path) -> bool:
        try:
            owner = json.loads(lock.read_text())
            mtime = lock.stat().st_mtime
        except FileNotFoundError:
            return True
        except (OSError, ValueError):  # being written right now, or foreign: judge by age
            return time.time() - _mtime(lock) > FOREIGN_CLAIM_SECONDS
        if owner.get("host") != socket.gethostname():
            return time.time() - mtime > FOREIGN_CLAIM_SECONDS
        booted = boot_time()
        if booted is not None and mtime < booted:  # written before this machine last started
            return True
        pid = int(owner.get("pid", -1))
        start = owner.get("start")
        if start is not None:  # pid and start time name one process: stale once it is gone (its pid maybe reused)
            return process_start(pid) != start
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat field 22), or None where
    unknown: with the pid it names one process, so a claim is not mistaken for a later process's
    that was given the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def boot_time() -> float | None:
    """When this machine started (seconds since the epoch, /proc/stat's btime), or None where unknown."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
