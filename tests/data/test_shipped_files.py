"""Shipped files: present, byte-identical to the provenance notes, readable .gz or plain."""

from __future__ import annotations

import gzip
import json

import pytest

from kebench.data import file_sha256, open_text, read_records, shipped_names, shipped_path
from kebench.data.shipped import FILES_DIR
from kebench.errors import DataError

# (records, sha256 of the uncompressed original) from shared/data/SOURCES.md (the shared folder beside the checkout)
EXPECTED = {
    "counterfact-edit.json": (10000, "20c225e6299b3c5b2c569bd9103aa212806e0d1e6e0c307de5c379773979b967"),
    "counterfact-train.json": (10000, "bb40e12c7b740d6859e521674cf438f063c7c3e444bc1b449e74cdd0900772d0"),
    "counterfact_rome_subset349.json": (336, "619ab0d1a241e00c6a4771230423c19afe792910e956e2332ea1fe442b389dad"),
    "zsre_mend_eval_portability_gpt4.json": (1037, "0cf155da229b2eccae19fcfe5f7a09523363d357f5f15508d1521f495ad5ecd9"),
    "zsre_mend_train_1k.json": (1000, "e62596101d8ed551889c26c0d2a5277f92eaef3b14416d8eaee39b04a244ab60"),
    "knowedit_ZsRE-test-all.json": (1304, "701add2223886ada5f6b5c2aa18b69109a2e33928ef41adc69dde7b95b22b3ab"),
    "MQuAKE-hard.json": (329, "0c821d45ab2b12b13f47fde20d5aedc293f19e8670d3c4ea4ae639025214874b"),
    "known_1000.json": (1209, "61daca55318bb5260c1e62e133debef9102c7b278bbc7b19dd2ac655543f333a"),
    "wikitext_dedup.txt": (5466, "195468dae4fa9ddbf268808e37eab949b736da2d0f24b56c7eddc17d9496b2a2"),
}


def test_shipped_set_is_exactly_the_expected_files():
    assert shipped_names() == sorted(EXPECTED)
    assert all(shipped_path(n).name == n + ".gz" for n in EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_file_matches_provenance(name):
    count, sha = EXPECTED[name]
    path = shipped_path(name)
    assert file_sha256(path) == sha
    if name.endswith(".json"):
        assert len(read_records(path)) == count
    else:
        with open_text(path) as f:
            assert len(f.read().splitlines()) == count


def test_every_source_has_a_licence_note():
    notes = (FILES_DIR / "LICENSES" / "README.md").read_text(encoding="utf-8")
    for name, (_, sha) in EXPECTED.items():
        assert name in notes and sha in notes
    assert (FILES_DIR / "LICENSES" / "MIT.txt").is_file()


def test_shipped_total_stays_small():
    total = sum(p.stat().st_size for p in FILES_DIR.glob("*.gz"))
    assert total < 4_000_000


def test_shipped_path_accepts_gz_suffix_and_directories():
    assert shipped_path("counterfact-edit.json.gz") == shipped_path("counterfact/counterfact-edit.json")


def test_unknown_shipped_name_lists_the_shipped_files():
    with pytest.raises(DataError, match=r"no shipped data file 'counterfact\.json'.*counterfact-edit\.json"):
        shipped_path("counterfact.json")


def test_gz_and_plain_read_and_hash_the_same(tmp_path):
    text = "zwei\nLinien ü\n"
    plain = tmp_path / "a.txt"
    plain.write_text(text, encoding="utf-8")
    packed = tmp_path / "a.txt.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write(text)
    with open_text(plain) as a, open_text(packed) as b:
        assert a.read() == b.read() == text
    assert file_sha256(plain) == file_sha256(packed)
    other = tmp_path / "b.txt"
    other.write_text(text + " ", encoding="utf-8")
    assert file_sha256(other) != file_sha256(plain)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_text(tmp_path / "nope.json")
    with pytest.raises(DataError, match="not found"):
        file_sha256(tmp_path / "nope.json")


def test_unparseable_json_names_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('[{"prompt": "x",', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.json.*not valid JSON"):
        read_records(bad)


def test_corrupt_gzip_names_the_file(tmp_path):
    bad = tmp_path / "broken.json.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match=r"broken\.json\.gz"):
        read_records(bad)


@pytest.mark.parametrize("payload, message", [
    ({"a": 1}, "expected a JSON list"),
    ([], "holds no records"),
    ([{"a": 1}, 3], "record 1 is a int"),
])
def test_wrong_top_level_shapes(tmp_path, payload, message):
    path = tmp_path / "f.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_records(path)


def test_json_lines_are_read(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert read_records(path) == [{"a": 1}, {"a": 2}]
