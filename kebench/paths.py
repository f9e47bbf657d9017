"""Where kebench keeps its caches. A leaf module: it imports nothing from kebench, so any layer may use it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: Path | None = None) -> Path:
    """kebench's cache folder: `cache_dir`, else $KEBENCH_CACHE, else ~/.cache/kebench."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("KEBENCH_CACHE") or Path.home() / ".cache" / "kebench").expanduser()
