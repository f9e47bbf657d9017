"""Claims let several processes split one long fit through a shared cache."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import torch

from kebench.fit_cache import FitCache, resolve_fit


@pytest.fixture
def cache(tmp_path):
    c = FitCache("target_values", "ab" * 32, "cpu", cache_dir=tmp_path)
    c.poll_seconds = 0.02
    return c


class Holder:
    """Another process that takes the claims it is given and keeps them until it is killed."""

    def __init__(self) -> None:
        script = (
            "import sys\nfrom filelock import FileLock\nheld = []\n"
            "for line in sys.stdin:\n"
            "    held.append(FileLock(line.strip())); held[-1].acquire(timeout=0); print('held', flush=True)\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def hold(self, cache: FitCache, key: str) -> None:
        lock = cache.path(key).with_suffix(".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        self.proc.stdin.write(f"{lock}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "held"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def other_process():
    """A live process that is not this one, to hold claims."""
    holder = Holder()
    yield holder
    holder.kill()


def test_a_claim_is_exclusive_until_released(cache):
    key = cache.key({"a": 1}, {})
    assert cache.claim(key) and not cache.claim(key)
    assert cache.claimed(key)
    cache.release(key)
    assert not cache.claimed(key) and cache.claim(key)


def test_a_live_process_keeps_its_claim_and_a_dead_ones_is_taken_over(cache, other_process):
    key = cache.key({"a": 1}, {})
    other_process.hold(cache, key)
    assert not cache.claim(key) and cache.claimed(key)
    other_process.kill()
    assert not cache.claimed(key) and cache.claim(key)


def test_a_claim_of_another_cache_in_this_process_counts(cache, tmp_path):
    key = cache.key({"a": 1}, {})
    other = FitCache("target_values", "ab" * 32, "cpu", cache_dir=tmp_path)
    assert other.claim(key)
    assert cache.claimed(key) and not cache.claim(key)
    other.release(key)
    assert not cache.claimed(key) and cache.claim(key)


def test_wait_for_returns_the_entry_once_its_holder_saves_it(cache, other_process):
    key = cache.key({"a": 1}, {})
    other_process.hold(cache, key)

    def holder() -> None:
        cache.save(key, {"x": torch.ones(3)})  # what the holder does before it lets go

    t = threading.Timer(0.2, holder)
    t.start()
    found = cache.wait_for(key, ("x",))
    t.join()
    assert found is not None and torch.equal(found["x"], torch.ones(3))


def test_wait_for_gives_up_when_the_holder_dies_without_saving(cache, other_process):
    key = cache.key({"a": 1}, {})
    other_process.hold(cache, key)
    threading.Timer(0.2, other_process.kill).start()
    assert cache.wait_for(key, ("x",)) is None


def test_lookup_gives_the_entry_or_the_claim_or_defers(cache, other_process):
    mine, theirs = cache.key({"a": 1}, {}), cache.key({"a": 2}, {})
    look = cache.lookup(mine, ("x",), wait=False)
    assert look.held and look.found is None and not look.deferred
    cache.save(mine, {"x": torch.zeros(2)})
    cache.release(mine)
    assert torch.equal(cache.lookup(mine, ("x",), wait=False).found["x"], torch.zeros(2))
    other_process.hold(cache, theirs)
    assert cache.lookup(theirs, ("x",), wait=False).deferred
    threading.Timer(0.1, other_process.kill).start()
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
    other_process.hold(cache, theirs)
    assert resolve_fit(cache, theirs, ("x",), lambda: pytest.fail("must not fit a claimed group"), wait=False) is None

    def broken():
        raise RuntimeError("fit failed")

    with pytest.raises(RuntimeError):
        resolve_fit(cache, mine, ("x",), broken, wait=False)
    assert not cache.claimed(mine) and cache.load(mine) is None  # nothing saved, the claim is free again


def test_resolve_fit_without_a_cache_just_fits():
    got = resolve_fit(None, None, ("x",), lambda: {"x": torch.ones(1)}, wait=False)
    assert not got.cached and torch.equal(got.tensors["x"], torch.ones(1))
