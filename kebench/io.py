"""Atomic file writes and append-only JSONL checkpoints: no result is lost to a crash."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, then rename over the target."""
    _atomic_write(path, "w", lambda fh: fh.write(text))


def atomic_write_stream(path: Path, write: Callable[[Any], object]) -> None:
    """`write(fh)` into a binary file that appears at `path` whole or not at all."""
    _atomic_write(path, "wb", write)


def _atomic_write(path: Path, mode: str, write: Callable[[Any], object]) -> None:
    """`write(fh)` into a temp file beside `path`, fsync, make it readable (mkstemp makes 0600;
    results and caches are meant to be shared), then rename over `path`: readers see the old
    file or the whole new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows and fsync; a torn last line (crash mid-write) is ignored by `read_jsonl`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=_json_default) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not Path(path).exists():
        return
    with open(path) as fh:
        for line in fh:
            if not line.endswith("\n"):
                return  # torn write from an interrupted run: drop it, it will be recomputed
            yield json.loads(line)


def atomic_torch_save(path: Path, obj: Any) -> None:
    """torch.save through `_atomic_write`: readers see the old file or the whole new one."""
    import torch  # local: keeps `kebench.io` importable without torch for the JSON helpers

    _atomic_write(path, "wb", lambda fh: torch.save(obj, fh))


def atomic_save_safetensors(path: Path, tensors: dict[str, Any]) -> None:
    """safetensors through `_atomic_write`: a crash mid-write never leaves a file that loads half."""
    from safetensors.torch import save  # local, as in atomic_torch_save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    _atomic_write(path, "wb", lambda fh: fh.write(data))
