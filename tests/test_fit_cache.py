"""Claims let several processes split one long fit through a shared cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from kebench.fit_cache import FOREIGN_CLAIM_SECONDS, FitCache, boot_time, process_start, resolve_fit


@pytest.fixture
def cache(tmp_path):
    c = FitCache("target_values", "ab" * 32, "cpu", cache_dir=tmp_path)
    c.poll_seconds = 0.02
    return c


@pytest.fixture
def other_process():
    """A live process that is not this one, to hold claims."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _hold(cache: FitCache, key: str, pid: int, host: str | None = None, **extra) -> None:
    lock = cache.path(key).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"host": host or os.uname().nodename, "pid": pid, "time": time.time(), **extra}))


def test_a_claim_is_exclusive_until_released(cache):
    key = cache.key({"a": 1}, {})
    assert cache.claim(key) and not cache.claim(key)
    assert cache.claimed(key)
    cache.release(key)
    assert not cache.claimed(key) and cache.claim(key)


def test_a_live_process_keeps_its_claim_and_a_dead_ones_is_taken_over(cache, other_process):
    key = cache.key({"a": 1}, {})
    _hold(cache, key, other_process.pid)
    assert not cache.claim(key)
    other_process.kill()
    other_process.wait()
    assert cache.claim(key)


def test_a_claim_from_another_machine_goes_stale_only_with_age(cache):
    key = cache.key({"a": 1}, {})
    _hold(cache, key, 1, host="elsewhere")
    assert not cache.claim(key)
    lock = cache.path(key).with_suffix(".lock")
    old = time.time() - FOREIGN_CLAIM_SECONDS - 60
    os.utime(lock, (old, old))
    assert cache.claim(key)


def test_wait_for_returns_the_entry_once_its_holder_saves_it(cache, other_process):
    key = cache.key({"a": 1}, {})
    _hold(cache, key, other_process.pid)

    def holder() -> None:
        time.sleep(0.2)
        cache.save(key, {"x": torch.ones(3)})
        cache.path(key).with_suffix(".lock").unlink()

    t = threading.Thread(target=holder)
    t.start()
    found = cache.wait_for(key, ("x",))
    t.join()
    assert found is not None and torch.equal(found["x"], torch.ones(3))


def test_wait_for_gives_up_when_the_holder_dies_without_saving(cache, other_process):
    key = cache.key({"a": 1}, {})
    _hold(cache, key, other_process.pid)
    threading.Timer(0.2, lambda: (other_process.kill(), other_process.wait())).start()  # reaped, as init would
    assert cache.wait_for(key, ("x",)) is None


def test_lookup_gives_the_entry_or_the_claim_or_defers(cache, other_process):
    mine, theirs = cache.key({"a": 1}, {}), cache.key({"a": 2}, {})
    look = cache.lookup(mine, ("x",), wait=False)
    assert look.held and look.found is None and not look.deferred
    cache.save(mine, {"x": torch.zeros(2)})
    cache.release(mine)
    assert torch.equal(cache.lookup(mine, ("x",), wait=False).found["x"], torch.zeros(2))
    _hold(cache, theirs, other_process.pid)
    assert cache.lookup(theirs, ("x",), wait=False).deferred
    threading.Timer(0.1, lambda: (other_process.kill(), other_process.wait())).start()
    taken_over = cache.lookup(theirs, ("x",), wait=True)  # its holder died without saving: ours to fit
    assert taken_over.held and taken_over.found is None


def test_resolve_fit_fits_once_then_reads_and_releases_the_claim(cache):
    key = cache.key({"a": 1}, {})
    calls = []

    def fit():
        calls.append(1)
        return {"x": torch.arange(3.0)}

    first = resolve_fit(cache, key, ("x",), fit, wait=False)
    assert not first.cached and first.seconds >= 0 and not cache.claimed(key)
    again = resolve_fit(cache, key, ("x",), fit, wait=False)
    assert again.cached and torch.equal(again.tensors["x"], torch.arange(3.0)) and len(calls) == 1
    assert again.seconds == pytest.approx(first.seconds)


def test_resolve_fit_defers_a_foreign_claim_and_releases_on_failure(cache, other_process):
    theirs, mine = cache.key({"a": 2}, {}), cache.key({"a": 3}, {})
    _hold(cache, theirs, other_process.pid)
    assert resolve_fit(cache, theirs, ("x",), lambda: pytest.fail("must not fit a claimed group"), wait=False) is None

    def broken():
        raise RuntimeError("fit failed")

    with pytest.raises(RuntimeError):
        resolve_fit(cache, mine, ("x",), broken, wait=False)
    assert not cache.claimed(mine) and cache.load(mine) is None  # nothing saved, the claim is free again


def test_resolve_fit_without_a_cache_just_fits():
    got = resolve_fit(None, None, ("x",), lambda: {"x": torch.ones(1)}, wait=False)
    assert not got.cached and torch.equal(got.tensors["x"], torch.ones(1))


@pytest.mark.skipif(process_start(os.getpid()) is None, reason="needs /proc to tell processes apart")
def test_a_claim_whose_pid_now_names_another_process_is_stale(cache, other_process):
    key = cache.key({"a": 4}, {})
    _hold(cache, key, other_process.pid, start=process_start(other_process.pid))
    assert cache.claimed(key)  # its holder, as recorded, is alive
    _hold(cache, key, other_process.pid, start=process_start(other_process.pid) - 1)
    assert not cache.claimed(key)  # the same pid, another process: the holder is gone
    _hold(cache, key, os.getpid(), start=-1)  # a dead process's claim that now carries our own pid
    assert cache.claim(key)  # taken over instead of waited on forever


@pytest.mark.skipif(boot_time() is None, reason="needs /proc/stat's boot time")
def test_a_claim_from_before_the_machine_started_is_stale(cache, other_process):
    key = cache.key({"a": 5}, {})
    _hold(cache, key, other_process.pid)  # an old-format claim (no start time) whose pid is alive again
    lock = cache.path(key).with_suffix(".lock")
    assert cache.claimed(key)
    before_boot = boot_time() - 60
    os.utime(lock, (before_boot, before_boot))
    assert not cache.claimed(key)
