"""Inspect kebench's on-disk caches and move them between machines as one archive.

The expensive parts of a large run live in the cache, not in the results file: covariance
statistics, MEMIT/AlphaEdit target values, MeG neurons and denoisers, update checkpoints,
the unedited model's predictions. A 10,000-edit CounterFact fit is hours of CPU; carrying it
to another machine (fit on a GPU box, evaluate on a laptop; or a CI worker that must not
refit) is an archive away. Every entry is keyed by what it depends on and verified on load,
so an imported entry is used only where it is valid; the archive adds a sha256 per file so
a damaged transfer is caught at import, not later.

Areas are the cache's folders one level down where a folder holds several kinds
(`fits/target_values`, `pre_edit/counterfact`, `meg/encoder`), else the top folder
(`stats`, `models`, `data`). Claims (`.lock`) and half-written temp files never travel.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from kebench.errors import ConfigError, DataError
from kebench.io import atomic_write_stream
from kebench.models.embedded import cache_root

MANIFEST = "kebench-cache.json"
FORMAT_VERSION = 1
SPLIT_AREAS = ("fits", "pre_edit", "meg")  # top folders whose subfolders are separate areas
REBUILDABLE = ("models",)  # left out of an export unless asked for: rebuilt from the shipped files


class _HashingReader:
    """A file's reader that hashes what is read through it (tarfile reads exactly the member's size)."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        block = self.fh.read(n)
        self.sha256.update(block)
        return block


@dataclass(frozen=True)
class Area:
    name: str  # e.g. "fits/target_values"
    files: int
    bytes: int


def _travels(path: Path) -> bool:
    """Whether a file is cache content: not a claim, not a temp file mid-write."""
    return path.is_file() and not path.is_symlink() and path.suffix not in (".lock", ".tmp") and not path.name.startswith(".")


def _area_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for top in sorted(p for p in root.iterdir() if p.is_dir()):
        if top.name in SPLIT_AREAS:
            for sub in sorted(p for p in top.iterdir() if p.is_dir()):
                found[f"{top.name}/{sub.name}"] = sub
        else:
            found[top.name] = top
    return found


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _travels(p))


def list_areas(root: Path | None = None) -> list[Area]:
    """Each cache area with its file count and size."""
    root = cache_root(root)
    areas = []
    for name, folder in _area_dirs(root).items():
        files = _files(folder)
        areas.append(Area(name, len(files), sum(f.stat().st_size for f in files)))
    return areas


def export_cache(out: Path, areas: list[str] | None = None, root: Path | None = None) -> dict[str, int]:
    """Write the chosen areas (default: all but the rebuildable ones) to the tar archive `out`
    (gzip-compressed if it ends in .gz), atomically, with a manifest of each file's size and sha256.
    Returns files and bytes written."""
    root = cache_root(root)
    known = _area_dirs(root)
    if areas:
        unknown = [a for a in areas if a not in known]
        if unknown:
            raise ConfigError(
                f"no cache area {', '.join(map(repr, unknown))} under {root}; "
                f"choose from {', '.join(known) or '(the cache is empty)'} (`kebench cache list`)"
            )
        chosen = list(dict.fromkeys(areas))
    else:
        chosen = [a for a in known if a.split("/")[0] not in REBUILDABLE]
    files = [f for name in chosen for f in _files(known[name])]
    manifest: dict = {"format": FORMAT_VERSION, "areas": chosen, "files": {}}
    out = Path(out)
    mode = "w:gz" if out.name.endswith(".gz") else "w"

    def write(fh) -> None:
        with tarfile.open(fileobj=fh, mode=mode) as tar:
            for f in files:
                rel = f.relative_to(root).as_posix()
                try:
                    src = open(f, "rb")
                except FileNotFoundError:  # removed since it was listed
                    continue
                with src:
                    # size and checksum of the very bytes archived, even if a running job appends meanwhile
                    info = tar.gettarinfo(arcname=rel, fileobj=src)
                    reader = _HashingReader(src)
                    tar.addfile(info, reader)
                manifest["files"][rel] = {"bytes": info.size, "sha256": reader.sha256.hexdigest()}
            blob = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)  # last, so it describes what was written
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

    atomic_write_stream(out, write)
    return {"files": len(manifest["files"]), "bytes": sum(v["bytes"] for v in manifest["files"].values())}


def import_cache(archive: Path, root: Path | None = None) -> dict[str, int]:
    """Unpack an `export_cache` archive into the cache. Files already present are kept (an entry's
    name is its key, so the same name holds the same content); each new file's sha256 is checked
    against the manifest as it is copied, before it is moved into place (atomically). Returns counts of added and kept files."""
    archive = Path(archive)
    if not archive.is_file():
        raise ConfigError(f"no cache archive at {archive}; pass the file `kebench cache export` wrote")
    root = cache_root(root)
    try:
        tar = tarfile.open(archive, mode="r:*")
    except tarfile.TarError as exc:
        raise DataError(f"{archive} is not a tar archive ({exc}); pass the file `kebench cache export` wrote") from None
    added = kept = 0
    with tar:
        try:
            manifest = json.load(tar.extractfile(MANIFEST))
        except (KeyError, AttributeError, json.JSONDecodeError):
            raise DataError(f"{archive} has no readable {MANIFEST}: not a kebench cache archive") from None
        if manifest.get("format") != FORMAT_VERSION:
            raise DataError(f"{archive}: cache archive format {manifest.get('format')!r}, this kebench reads {FORMAT_VERSION}")
        seen = set()
        for member in tar:
            if member.name == MANIFEST:
                continue
            seen.add(member.name)
            rel = Path(member.name)
            expected = manifest["files"].get(member.name)
            if expected is None or not member.isfile() or rel.is_absolute() or ".." in rel.parts:
                raise DataError(f"{archive}: unexpected member {member.name!r}; the archive is damaged or not kebench's")
            target = root / rel
            if target.exists():
                kept += 1
                continue

            def copy_verified(fh) -> None:
                # hashed as it is copied; a mismatch raises before the file is moved into place
                reader = _HashingReader(tar.extractfile(member))
                shutil.copyfileobj(reader, fh, 1 << 20)
                if reader.sha256.hexdigest() != expected["sha256"]:
                    raise DataError(f"{archive}: {member.name} does not match its checksum; the archive is damaged")

            atomic_write_stream(target, copy_verified)
            added += 1
    missing = len(set(manifest["files"]) - seen)
    if missing:
        raise DataError(f"{archive} is truncated: {missing} of its {len(manifest['files'])} files are missing "
                        f"({added} added, {kept} kept); export it again")
    return {"added": added, "kept": kept}
