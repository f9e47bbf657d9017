"""MeG's training data that is not the edits: a pool disjoint from the requests.

The encoder learns paraphrase invariance from (prompt, paraphrase) pairs of this pool, and
the familiarity network learns what an unrelated query looks like from its prompts. No
evaluation prompt (paraphrases, neighbourhood) of the edited cases is ever used. Records
are dropped when they share a case id, a filled prompt, or a subject with any request.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from kebench.data import EditCase, EditRequest
from kebench.errors import DataError
from kebench.suites import get_suite, load_cases


@dataclass(frozen=True)
class PoolRecord:
    """One pool fact: its filled prompt, "{}" template, subject and paraphrases."""

    prompt: str
    template: str
    subject: str
    paraphrases: tuple[str, ...]


def disjoint_pool(suite: str, requests: Sequence[EditRequest], min_records: int = 1000) -> tuple[list[PoolRecord], str]:
    """The training pool of the suite named `suite` (its `Suite.pool`: MeG's `pool` setting, by default
    the pool of the suite the run edits) minus anything sharing a case id, prompt or subject with the edits.

    Subjects of *all* the shipped cases of the pool's own suite are excluded when that leaves at
    least `min_records` (CounterFact: 9,303 of 10,000), so the pool, and the encoder head cached on
    it, is the same whichever cases are edited; otherwise (zsRE's pool is part of the suite)
    only the requests' subjects. Returns the records and which exclusion applied.
    """
    pool = get_suite(suite).pool
    if pool is None:
        raise DataError(f"suite {suite!r} has no training pool; name another suite's with --hparam pool=counterfact")
    exclude = [EditCase(case_id=r.case_id or f"req{i}", suite=suite, requests=(r,)) for i, r in enumerate(requests)]
    subjects = {r.subject.strip().lower() for r in requests}
    cases = pool.cases(exclude)
    suite_subjects = subjects | {c.subject.strip().lower() for c in load_cases(pool.name)}
    out = _records(cases, suite_subjects)
    scope = "suite"
    if len(out) < min_records:
        out, scope = _records(cases, subjects), "requests"
    if not out:
        raise DataError(f"the {pool.name!r} training pool is empty after removing the edited subjects; "
                        "train on another suite's pool, e.g. --hparam pool=counterfact")
    return out, scope


def _records(pool: Sequence[EditCase], excluded_subjects: set[str]) -> list[PoolRecord]:
    out = []
    for case in pool:
        req = case.request
        if req.subject.strip().lower() not in excluded_subjects:
            out.append(PoolRecord(req.text, req.prompt, req.subject, tuple(p for p in case.paraphrases if p)))
    return out


def contrastive_pairs(records: Sequence[PoolRecord], limit: int, seed: int) -> list[tuple[str, str]]:
    """Up to `limit` (prompt, paraphrase) pairs from a seeded sample of the pool."""
    pairs = [(r.prompt, p) for r in records for p in r.paraphrases if p != r.prompt]
    random.Random(seed).shuffle(pairs)
    return pairs[:limit]


def unrelated_queries(
    records: Sequence[PoolRecord], requests: Sequence[EditRequest], n: int, seed: int
) -> list[str]:
    """Negatives for the familiarity gate: pool prompts and paraphrases, and "neighbourhood-like"
    queries (each request's own template filled with a pool subject) so the gate learns that
    the subject, not the relation wording, makes a query familiar. Half of each kind."""
    rng = random.Random(seed)
    plain = sorted({q for r in records for q in (r.prompt, *r.paraphrases)})
    rng.shuffle(plain)
    subjects = sorted({r.subject for r in records})
    same_relation: dict[str, list[str]] = {}
    for r in records:
        same_relation.setdefault(r.template, []).append(r.subject)
    templates = sorted({q.prompt for q in requests}) or ["{}"]
    neighbours = []
    for _ in range(n - n // 2):
        template = rng.choice(templates)
        pool = same_relation.get(template) or subjects
        neighbours.append(template.replace("{}", rng.choice(pool)))
    return plain[: n // 2] + neighbours


def split_records(records: Sequence[PoolRecord], fraction: float, seed: int) -> tuple[list[PoolRecord], list[PoolRecord]]:
    """A seeded split by subject (no subject on both sides): (train, held out)."""
    subjects = sorted({r.subject for r in records})
    random.Random(seed).shuffle(subjects)
    held = set(subjects[: max(1, int(len(subjects) * fraction))])
    return [r for r in records if r.subject not in held], [r for r in records if r.subject in held]
