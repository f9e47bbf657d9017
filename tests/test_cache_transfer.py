"""Cache archives carry a long fit to another machine intact, or fail loudly."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import pytest

from kebench.cache_transfer import MANIFEST, export_cache, import_cache, list_areas
from kebench.errors import ConfigError, DataError


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    (root / "fits" / "target_values" / "w1").mkdir(parents=True)
    (root / "fits" / "target_values" / "w1" / "a.pt").write_bytes(os.urandom(3000))
    (root / "fits" / "target_values" / "w1" / "b.lock").write_text('{"pid": 1}')  # a claim: never travels
    (root / "fits" / "target_values" / "w1" / ".a.pt.x.tmp").write_bytes(b"half")  # mid-write: never travels
    (root / "fits" / "meg_neurons").mkdir(parents=True)
    (root / "fits" / "meg_neurons" / "c.pt").write_bytes(os.urandom(100))
    (root / "stats").mkdir()
    (root / "stats" / "cov.pt").write_bytes(os.urandom(500))
    (root / "models" / "m").mkdir(parents=True)
    (root / "models" / "m" / "weights.safetensors").write_bytes(b"big")
    return root


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_list_areas_splits_fits_by_kind_and_leaves_out_claims(source):
    areas = {a.name: a for a in list_areas(source)}
    assert set(areas) == {"fits/target_values", "fits/meg_neurons", "stats", "models"}
    assert areas["fits/target_values"].files == 1 and areas["fits/target_values"].bytes == 3000


@pytest.mark.parametrize("name", ["cache.tar", "cache.tar.gz"])
def test_export_then_import_reproduces_the_entries_but_not_claims_or_models(source, tmp_path, name):
    out = tmp_path / name
    done = export_cache(out, root=source)
    assert done == {"files": 3, "bytes": 3600}
    dest = tmp_path / "dest"
    assert import_cache(out, root=dest) == {"added": 3, "kept": 0}
    want = {k: v for k, v in _tree(source).items() if not k.startswith("models/") and not k.endswith((".lock", ".tmp"))}
    assert _tree(dest) == want
    assert import_cache(out, root=dest) == {"added": 0, "kept": 3}  # a second import changes nothing


def test_export_of_chosen_areas_and_unknown_area(source, tmp_path):
    export_cache(tmp_path / "s.tar", ["stats", "models"], root=source)
    import_cache(tmp_path / "s.tar", root=tmp_path / "dest")
    assert set(_tree(tmp_path / "dest")) == {"stats/cov.pt", "models/m/weights.safetensors"}
    with pytest.raises(ConfigError, match="no cache area 'fits'.*fits/target_values"):
        export_cache(tmp_path / "x.tar", ["fits"], root=source)
    assert not (tmp_path / "x.tar").exists()


def test_import_keeps_an_existing_file(source, tmp_path):
    export_cache(tmp_path / "c.tar", ["stats"], root=source)
    dest = tmp_path / "dest"
    (dest / "stats").mkdir(parents=True)
    (dest / "stats" / "cov.pt").write_bytes(b"mine")
    assert import_cache(tmp_path / "c.tar", root=dest) == {"added": 0, "kept": 1}
    assert (dest / "stats" / "cov.pt").read_bytes() == b"mine"


def _rewrite(archive, out, edit):
    """Copy `archive` to `out`, letting `edit(name, data)` change or drop (None) each member's bytes."""
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src:
            data = edit(member.name, src.extractfile(member).read())
            if data is None:
                continue
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))


def test_a_damaged_archive_is_refused_and_places_nothing(source, tmp_path):
    export_cache(tmp_path / "c.tar", root=source)
    _rewrite(tmp_path / "c.tar", tmp_path / "bad.tar", lambda n, d: b"x" * len(d) if n == "stats/cov.pt" else d)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="stats/cov.pt does not match its checksum"):
        import_cache(tmp_path / "bad.tar", root=dest)
    assert not (dest / "stats").exists() or not any((dest / "stats").iterdir())


def test_a_truncated_archive_names_what_is_missing(source, tmp_path):
    export_cache(tmp_path / "c.tar", root=source)
    _rewrite(tmp_path / "c.tar", tmp_path / "short.tar", lambda n, d: None if n == "stats/cov.pt" else d)
    with pytest.raises(DataError, match="truncated: 1 of its 3 files"):
        import_cache(tmp_path / "short.tar", root=tmp_path / "dest")


def test_a_foreign_member_is_refused(source, tmp_path):
    export_cache(tmp_path / "c.tar", root=source)
    _rewrite(tmp_path / "c.tar", tmp_path / "evil.tar", lambda n, d: d)
    with tarfile.open(tmp_path / "evil.tar", "a") as tar:
        info = tarfile.TarInfo("../outside.pt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError, match="unexpected member '../outside.pt'"):
        import_cache(tmp_path / "evil.tar", root=tmp_path / "dest")
    assert not (tmp_path / "outside.pt").exists()


def test_not_an_archive_or_no_archive(tmp_path):
    with pytest.raises(ConfigError, match="no cache archive"):
        import_cache(tmp_path / "missing.tar", root=tmp_path)
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(DataError, match="not a tar archive"):
        import_cache(tmp_path / "junk.tar", root=tmp_path)
    with tarfile.open(tmp_path / "plain.tar", "w") as tar:
        info = tarfile.TarInfo("x")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DataError, match=f"no readable {MANIFEST}"):
        import_cache(tmp_path / "plain.tar", root=tmp_path)


def test_cli_round_trip_and_one_line_error(source, tmp_path):
    def kebench(*args, cache):
        env = {**os.environ, "KEBENCH_CACHE": str(cache)}
        return subprocess.run([sys.executable, "-c", "from kebench.cli import main; main()", *args],
                              capture_output=True, text=True, timeout=120, env=env)

    listed = kebench("cache", "list", cache=source)
    assert listed.returncode == 0 and "fits/target_values" in listed.stdout
    made = kebench("cache", "export", str(tmp_path / "c.tar"), "--area", "stats", cache=source)
    assert made.returncode == 0 and "1 files" in made.stdout
    got = kebench("cache", "import", str(tmp_path / "c.tar"), cache=tmp_path / "dest")
    assert got.returncode == 0 and "1 files added" in got.stdout
    assert (tmp_path / "dest" / "stats" / "cov.pt").read_bytes() == (source / "stats" / "cov.pt").read_bytes()
    bad = kebench("cache", "export", str(tmp_path / "d.tar"), "--area", "nope", cache=source)
    assert bad.returncode == 2 and "no cache area 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_a_file_removed_after_listing_is_left_out(source, tmp_path, monkeypatch):
    import kebench.cache_transfer as ct

    listed = ct._files
    monkeypatch.setattr(ct, "_files", lambda folder: listed(folder) + [folder / "gone.pt"])
    assert export_cache(tmp_path / "c.tar", ["stats"], root=source) == {"files": 1, "bytes": 500}
    assert import_cache(tmp_path / "c.tar", root=tmp_path / "dest") == {"added": 1, "kept": 0}
