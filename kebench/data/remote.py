"""The full public benchmark files, fetched once into the data cache where a network allows.

kebench ships subsets (a fresh clone runs offline); suites named `*-full` read the complete
public releases instead. A file is downloaded once to $KEBENCH_CACHE/data/ (atomically, so a
broken download never poses as data); when it cannot be fetched, the suite falls back to its
shipped files and says so, in the log and in the results' provenance notes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kebench.paths import cache_root

log = logging.getLogger(__name__)

TIMEOUT_S = float(os.environ.get("KEBENCH_FETCH_TIMEOUT", "20"))


@dataclass(frozen=True)
class RemoteFile:
    """A public data file: where it lives and the name it is cached under."""

    name: str
    url: str


def data_cache_dir() -> Path:
    return cache_root() / "data"


def fetch(remote: RemoteFile, timeout: float = TIMEOUT_S) -> tuple[Path | None, str | None]:
    """(cached path, None) once the file is here; (None, reason) when it cannot be fetched."""
    target = data_cache_dir() / remote.name
    if target.is_file() and target.stat().st_size > 0:
        return target, None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{remote.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        if os.path.getsize(tmp) == 0:
            raise OSError("empty response")
        os.replace(tmp, target)
        log.info("fetched %s into %s", remote.url, target)
        return target, None
    except Exception as exc:  # no network, HTTP error, timeout: the caller falls back
        Path(tmp).unlink(missing_ok=True)
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
