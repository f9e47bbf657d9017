"""Wall time per phase: the one timing helper of the runner and the editors."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Timer:
    """Seconds per phase, summed over repeats: `with timer("fit"): ...`, or `timer.add("fit", seconds)`
    for time measured elsewhere."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - start)
