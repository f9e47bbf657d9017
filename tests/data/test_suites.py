"""Suite registry, sampling, unique ids and the disjoint training pool."""

from __future__ import annotations

import pytest

from kebench.data import sample_cases
from kebench.data.case import EditCase, EditRequest
from kebench.errors import ConfigError, DataError
from kebench.suites import SUITES, LoadedData, Suite, get_suite, load_cases, suite_names, training_pool


def make_cases(n: int, suite: str = "toy") -> list[EditCase]:
    return [EditCase(str(i), suite, (EditRequest("{} is in", f"s{i}", "Paris"),)) for i in range(n)]


def test_builtin_suites_are_registered():
    assert {"counterfact", "counterfact-rome", "zsre", "zsre-knowedit", "mquake"} <= set(suite_names())


def test_unknown_suite_suggests_a_name():
    with pytest.raises(ConfigError, match="did you mean 'counterfact'"):
        load_cases("counterfac")


def test_sampling_is_deterministic_and_keeps_order():
    cases = make_cases(50)
    a = sample_cases(cases, 10, seed=3)
    assert a == sample_cases(cases, 10, seed=3)
    assert len({c.case_id for c in a}) == 10
    ids = [int(c.case_id) for c in a]
    assert ids == sorted(ids)
    assert [c.case_id for c in sample_cases(cases, 10, seed=4)] != [c.case_id for c in a]


def test_sampling_matches_python_random_sample():
    # the same seed must pick the same indices as random.Random(seed).sample, so runs are reproducible
    import random

    cases = make_cases(30)
    expected = sorted(random.Random(11).sample(range(30), 7))
    assert [int(c.case_id) for c in sample_cases(cases, 7, seed=11)] == expected


def test_sampling_all_returns_everything_in_order():
    cases = make_cases(5)
    assert sample_cases(cases, 5, seed=0) == cases


def test_scale_too_large_message():
    with pytest.raises(DataError, match=r"^scale 6 exceeds the 5 cases in toy; use --scale <= 5$"):
        sample_cases(make_cases(5), 6, seed=0)
    with pytest.raises(DataError, match="at least 1"):
        sample_cases(make_cases(5), 0, seed=0)


def test_sampling_a_real_suite():
    cases = load_cases("counterfact-rome")
    picked = sample_cases(cases, 20, seed=0)
    with pytest.raises(DataError, match="exceeds the 336 cases in counterfact-rome"):
        sample_cases(cases, 337, seed=0)
    assert picked == sample_cases(load_cases("counterfact-rome"), 20, seed=0)


def test_duplicate_case_ids_are_refused(write_json, cf_easyedit):
    path = write_json("dup.json", [cf_easyedit, dict(cf_easyedit, target_new="German")])
    with pytest.raises(DataError, match="case_id '7' twice"):
        load_cases("counterfact", path)


@pytest.mark.parametrize("suite", ["counterfact", "counterfact-rome"])
def test_counterfact_pool_is_disjoint_from_the_edits(suite):
    cases = load_cases(suite)
    pool = training_pool(suite, cases)
    assert 9000 < len(pool) < 10000
    ids = {c.case_id for c in cases}
    texts = {c.prompt for c in cases}
    assert not any(c.case_id in ids or c.prompt in texts for c in pool)


def test_zsre_pool_excludes_the_sampled_cases_only():
    cases = load_cases("zsre")
    assert training_pool("zsre", cases) == []  # the full suite uses the whole pool file
    picked = sample_cases(cases, 1500, seed=0)
    pool = training_pool("zsre", picked)
    edited = {c.prompt for c in picked}
    assert pool and not any(c.prompt in edited for c in pool)


def test_each_suite_names_its_training_pool():
    builtin = ("counterfact", "counterfact-rome", "counterfact-full", "zsre", "zsre-knowedit", "zsre-all", "zsre-full",
               "mquake", "mquake-cf3k")
    pools = {name: get_suite(name).pool.name for name in builtin}
    assert {n for n, p in pools.items() if p == "zsre"} == {"zsre", "zsre-knowedit", "zsre-full"}
    # every other built-in suite trains on CounterFact's pool: zsre-all holds the whole zsRE pool itself,
    # and MQuAKE ships no training split
    assert {p for n, p in pools.items() if n not in ("zsre", "zsre-knowedit", "zsre-full")} == {"counterfact"}
    assert training_pool("mquake") == training_pool("counterfact")


def test_suite_without_pool(monkeypatch):
    toy = Suite("toy-no-pool", "", lambda *a, **k: [], lambda records: {}, ("x",), loader=lambda f, fmt: LoadedData([], []))
    monkeypatch.setitem(SUITES._items, toy.name, toy)
    with pytest.raises(DataError, match="no training pool"):
        training_pool("toy-no-pool")
