import json

from kebench.io import append_jsonl, atomic_write_json, read_jsonl


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
