"""MeG's disjoint training pool: no edited subject, prompt or case id; stable across edit sets."""

from __future__ import annotations

import pytest

from kebench.config import with_overrides
from kebench.data.case import EditRequest
from kebench.errors import DataError
from kebench.suites import get_suite, load_cases
from editors.meg import MeGEditor
from editors.meg.pool import contrastive_pairs, disjoint_pool, split_records, unrelated_queries


def test_pool_excludes_edits_and_is_the_same_for_any_counterfact_subset():
    cases = load_cases("counterfact")
    a, scope = disjoint_pool("counterfact", [c.request for c in cases[:5]])
    b, _ = disjoint_pool("counterfact", [c.request for c in cases[100:103]])
    assert scope == "suite" and a == b and len(a) == 9303  # 10,000 CounterFact cases' subjects left out
    edited = {c.subject.lower() for c in cases}
    assert not any(r.subject.lower() in edited for r in a)
    own = EditRequest("{} works for", a[0].subject, "Nokia")  # a request outside the suite
    c, _ = disjoint_pool("counterfact", [own])
    assert all(r.subject != a[0].subject for r in c) and len(c) < len(a)


def test_pairs_negatives_and_split():
    cases = load_cases("counterfact")
    pool, _ = disjoint_pool("counterfact", [c.request for c in cases[:3]])
    pairs = contrastive_pairs(pool, 50, seed=0)
    assert len(pairs) == 50 and all(p != q for p, q in pairs)
    train, held = split_records(pool, 0.5, seed=0)
    assert not {r.subject for r in train} & {r.subject for r in held}
    reqs = [c.request for c in cases[:3]]
    neg = unrelated_queries(held, reqs, 40, seed=0)
    assert len(neg) == 40
    held_subjects = {r.subject for r in held}
    fills = {r.prompt.replace("{}", s) for r in reqs for s in held_subjects}
    assert all(q in fills for q in neg[20:])  # neighbourhood-like: an edit's template, a held-out pool subject
    assert not any(r.text in neg for r in reqs)


def test_meg_trains_on_the_pool_of_the_suite_it_edits():
    """The pool is the suite's (`Suite.pool`), passed through `default_hparams`; `--hparam pool=` still names another."""
    pool_on = {name: MeGEditor.default_hparams("default", get_suite(name)).pool
               for name in ("counterfact", "counterfact-rome", "mquake", "zsre", "zsre-knowedit", "zsre-all")}
    assert pool_on == {"counterfact": "counterfact", "counterfact-rome": "counterfact", "mquake": "counterfact",
                       "zsre": "zsre", "zsre-knowedit": "zsre", "zsre-all": "counterfact"}
    assert MeGEditor.default_hparams("default").pool == "counterfact"  # no suite: what CounterFact runs record
    assert with_overrides(MeGEditor.default_hparams("default", get_suite("zsre")), {"pool": "counterfact"}).pool == "counterfact"


def test_a_pool_inside_the_edited_cases_says_which_to_use_instead():
    cases = load_cases("zsre")  # the zsRE pool is part of the zsre suite: editing all of it leaves no pool
    with pytest.raises(DataError, match="--hparam pool=counterfact"):
        disjoint_pool("zsre", [c.request for c in cases])
