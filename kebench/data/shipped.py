"""Files shipped inside the package (gzip-compressed), and reading .gz or plain files alike.

Benchmark files are shipped so that a run needs no download and every result
can name the exact bytes it was scored on (`file_sha256`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any, TextIO

from kebench.errors import DataError

FILES_DIR = Path(__file__).resolve().parent / "files"


def shipped_names() -> list[str]:
    """Original names (without .gz) of the shipped data files."""
    return sorted(p.name.removesuffix(".gz") for p in FILES_DIR.iterdir() if p.is_file())


def shipped_path(name: str) -> Path:
    """Path of the shipped file called `name` (its original name; ".gz" optional)."""
    base = Path(name).name.removesuffix(".gz")
    for candidate in (FILES_DIR / f"{base}.gz", FILES_DIR / base):
        if candidate.is_file():
            return candidate
    raise DataError(f"no shipped data file {name!r}; shipped: {', '.join(shipped_names())}")


def display_name(path: Path) -> str:
    """Short name for messages: the bare name for shipped files, the full path otherwise."""
    path = Path(path)
    return path.name if path.resolve().parent == FILES_DIR else str(path)


def open_text(path: Path | str) -> TextIO:
    """Open a UTF-8 text file for reading, decompressing it if its name ends in .gz."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found; check the path")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def file_sha256(path: Path | str) -> str:
    """sha256 of the file's uncompressed content, so a .gz and its original hash the same."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found; check the path")
    digest = hashlib.sha256()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except (OSError, EOFError) as e:
        raise DataError(f"{display_name(path)}: cannot read ({e}); replace the file") from e
    return digest.hexdigest()


def read_records(path: Path | str) -> list[dict[str, Any]]:
    """The records of a JSON-list file (or JSON Lines when named *.jsonl[.gz])."""
    path = Path(path)
    name = display_name(path)
    is_jsonl = path.name.removesuffix(".gz").endswith(".jsonl")
    try:
        with open_text(path) as f:
            if is_jsonl:
                data: Any = [json.loads(line) for line in f if line.strip()]
            else:
                data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{name}: not valid JSON ({e.msg} at line {e.lineno}); fix or replace the file") from e
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{name}: cannot read ({e}); replace the file") from e
    if not isinstance(data, list):
        raise DataError(f"{name}: expected a JSON list of records, got {type(data).__name__}")
    if not data:
        raise DataError(f"{name}: holds no records")
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(f"{name}: record {i} is a {type(record).__name__}, expected a JSON object")
    return data
