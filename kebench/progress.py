"""Progress for long phases: rich bars on a terminal, periodic log lines otherwise, nothing when disabled.

Background runs (nohup, CI logs) are not terminals: they get one line per phase start, at most one
per `LOG_EVERY_S` seconds while it runs (count, percent, elapsed, ETA), and one at its end.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_enabled: bool = sys.stderr.isatty()
LOG_EVERY_S = 60.0


_active: Progress | None = None  # the terminal display open now (bars nest into it)


def set_enabled(flag: bool) -> None:
    """Turn bars on/off globally (the CLI's --quiet / --progress)."""
    global _enabled
    _enabled = flag


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_description(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)


class _LogBar(_Bar):
    """Log lines instead of a bar, for output that is not a terminal."""

    def __init__(self, description: str, total: int | None) -> None:
        super().__init__(None, None)
        self.description, self.total, self.done = description, total, 0
        self.start = self.last = time.monotonic()
        self._line("start")

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            self._line()

    def set_description(self, text: str) -> None:
        self.description = text

    def finish(self) -> None:
        self._line("done")

    def _line(self, state: str = "") -> None:
        elapsed = time.monotonic() - self.start
        parts = [f"{self.description}:", f"{self.done}/{self.total}" if self.total else str(self.done)]
        if self.total and state != "start":
            parts.append(f"({100 * self.done / self.total:.0f}%)")
        parts.append(f"elapsed {_hms(elapsed)}")
        if self.total and 0 < self.done < self.total:
            parts.append(f"eta {_hms(elapsed / self.done * (self.total - self.done))}")
        if state:
            parts.append(state)
        print(" ".join(parts), file=sys.stderr, flush=True)


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[_Bar]:
    """A bar with count, elapsed time and ETA; `advance()` it as work completes."""
    if not _enabled:
        yield _Bar(None, None)
        return
    if not sys.stderr.isatty():
        bar = _LogBar(description, total)
        yield bar
        bar.finish()
        return
    global _active
    if _active is not None:  # a bar inside a bar (evaluation between editing steps): a second line of the same display
        task = _active.add_task(description, total=total)
        try:
            yield _Bar(_active, task)
        finally:
            _active.remove_task(task)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total)
        _active = progress
        try:
            yield _Bar(progress, task)
        finally:
            _active = None
