"""The full public files: fetched once into the data cache, with a noticed fallback to the shipped files."""

from __future__ import annotations

import json

import pytest

from kebench.data import remote
from kebench.data.remote import RemoteFile, fetch
from kebench.data.shipped import read_records, shipped_path
from kebench.data.loading import SuiteData
from kebench.suites import get_suite

CF = ("counterfact-easyedit", "counterfact-rome")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def published(tmp_path):
    """A 'public release' served from a file:// URL: 40 ROME-layout CounterFact records."""
    records = read_records(shipped_path("counterfact_rome_subset349.json"))[:40]
    path = tmp_path / "server" / "counterfact.json"
    path.parent.mkdir()
    path.write_text(json.dumps(records))
    return path


def test_fetched_once_then_read_from_the_cache(cache, published):
    data = SuiteData(("counterfact_rome_subset349.json",), CF, remote=(RemoteFile("cf-test.json", published.as_uri()),))
    paths, notes = data.source_paths("cf-test-full")
    assert notes == [] and paths == [cache / "data" / "cf-test.json"]
    assert len(data.load("cf-test-full").cases) == 40
    published.unlink()  # the server is gone: the cached copy still serves
    assert len(data.load("cf-test-full").cases) == 40
    assert not list((cache / "data").glob("*.part"))


def test_unreachable_release_falls_back_to_the_shipped_files_with_a_notice(cache, caplog):
    data = SuiteData(("counterfact_rome_subset349.json",), CF,
                     remote=(RemoteFile("nowhere.json", "http://127.0.0.1:9/nowhere.json"),))
    paths, notes = data.source_paths("cf-test-full")
    assert paths == [shipped_path("counterfact_rome_subset349.json")]
    assert len(notes) == 1 and "could not fetch" in notes[0] and "127.0.0.1:9" in notes[0]
    assert "using the shipped files" in caplog.text
    assert len(data.load("cf-test-full").cases) == 336
    assert not (cache / "data" / "nowhere.json").exists()  # no partial file poses as data


def test_full_suites_record_the_fallback_in_provenance(cache, monkeypatch):
    monkeypatch.setattr("kebench.data.loading.fetch", lambda r: (None, "URLError: offline"))
    data = get_suite("mquake-cf3k").load(None, None)
    assert data.files[0]["path"] == "MQuAKE-hard.json.gz"
    assert "MQuAKE-CF-3k.json" in data.provenance()["notes"][0]
    assert len(data.cases) == len(get_suite("mquake").load(None, None).cases)


def test_fetch_reports_why(cache):
    got, why = fetch(RemoteFile("x.json", "file:///definitely/not/here.json"), timeout=1)
    assert got is None and "Error" in why
    assert remote.data_cache_dir() == cache / "data"
