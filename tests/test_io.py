import json

import pytest
import torch
from safetensors.torch import load_file

from kebench.io import append_jsonl, atomic_save_safetensors, atomic_write_json, read_jsonl


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "r.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_jsonl_ignores_torn_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    append_jsonl(path, [{"case_id": "1"}, {"case_id": "2"}])
    with open(path, "a") as fh:
        fh.write('{"case_id": "3"')  # interrupted mid-write
    assert [r["case_id"] for r in read_jsonl(path)] == ["1", "2"]


def test_safetensors_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "head.safetensors"
    old = {"w": torch.arange(6.0).reshape(2, 3).t()}  # non-contiguous: saved anyway
    atomic_save_safetensors(path, old)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("kebench.io.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_save_safetensors(path, {"w": torch.zeros(2)})
    assert torch.equal(load_file(str(path))["w"], old["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["head.safetensors"]
