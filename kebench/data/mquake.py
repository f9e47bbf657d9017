"""MQuAKE (Zhong et al., 2023) multi-hop cases in the original layout, parsed into `EditCase`s.

A case applies all its rewrites, then asks multi-hop questions whose answer
follows only if the edits compose. The multi-hop questions become portability
probes (answer: `new_answer` and its aliases), each asked in MQuAKE's few-shot
"Q: ... A: ..." format (`multihop_prompt`); the original answers and the
single-hop chains stay in `extra` for metrics that want them.

Two cases whose rewrites set the same (subject, relation) to different objects cannot both
hold after editing; `conflicting_cases` finds them and the mquake suites leave them out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from kebench.data.case import EditCase, EditRequest, Probe
from kebench.data.fields import Fields
from kebench.data.zsre import ZSRE_TEMPLATE

EXPECTED = (
    "MQuAKE format (case_id, requested_rewrite [{prompt with '{}', subject, target_new.str, target_true.str}], "
    "questions, new_answer, new_answer_alias, answer, answer_alias, single_hops, new_single_hops)"
)


#: The demonstrations before each multi-hop question: our own 2-4-hop questions about facts
#: that MQuAKE-hard does not mention (no subject or answer of the file), in the style of MQuAKE's
#: `prompts/multihop-prompts.txt` (one "Q: ... A: ..." per line, the answer an entity's name).
MULTIHOP_FEW_SHOT: tuple[tuple[str, str], ...] = (
    ("What is the capital of the country where the Eiffel Tower is located?", "Paris"),
    ("Which continent is the country where Mount Fuji is located in?", "Asia"),
    ("What is the official language of the country where the Colosseum is located?", "Italian"),
    ("In which city was the composer of The Magic Flute born?", "Salzburg"),
    ("What currency is used in the country where the Brandenburg Gate is located?", "Euro"),
    ("In which country is the city where Albert Einstein was born located?", "Germany"),
    ("What is the capital of the country where the Statue of Liberty is located?", "Washington, D.C."),
    ("Which continent is the country where the manufacturer of the Volkswagen Golf is headquartered located in?",
     "Europe"),
)
#: How the multi-hop questions are asked, recorded with each case and result record.
MULTIHOP_FORMAT = "mquake-few-shot"


def multihop_prompt(question: str) -> str:
    """The few-shot prompt for one multi-hop question: the demonstrations, then "Q: <question> A:".

    The model answers on the same line; its answer is that line (generation stops at its end).
    """
    shots = "".join(f"Q: {q} A: {a}\n" for q, a in MULTIHOP_FEW_SHOT)
    return f"{shots}Q: {question.strip()} A:"


def conflicting_cases(cases: Sequence[EditCase]) -> dict[str, list[str]]:
    """Cases with a rewrite that another case sets to a different object, by case id.

    Two rewrites conflict when they share the subject and the relation (its `relation_id` where
    the file gives one, else the cloze prompt) but not the new object: no edited model can satisfy
    both cases. Each value names the conflicting rewrites ("<subject> | <relation>: a / b").
    """
    targets: dict[tuple[str, str], set[str]] = defaultdict(set)
    keyed: list[tuple[str, list[tuple[str, str]]]] = []
    for case in cases:
        relation_ids = case.extra.get("relation_ids") or (None,) * len(case.requests)
        keys = []
        for request, relation_id in zip(case.requests, relation_ids):
            key = (request.subject, str(relation_id) if relation_id else request.prompt)
            targets[key].add(request.target_new)
            keys.append(key)
        keyed.append((case.case_id, keys))
    out: dict[str, list[str]] = {}
    for case_id, keys in keyed:
        clashes = [f"{s} | {r}: {' / '.join(sorted(targets[(s, r)]))}" for s, r in dict.fromkeys(keys)
                   if len(targets[(s, r)]) > 1]
        if clashes:
            out[case_id] = clashes
    return out


def drop_conflicting(cases: Sequence[EditCase]) -> tuple[list[EditCase], dict[str, list[str]]]:
    """`cases` without every case in a conflict (both sides: neither is the right one), and those left out."""
    conflicts = conflicting_cases(cases)
    return [c for c in cases if c.case_id not in conflicts], conflicts


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_mquake(f: Fields, suite: str, template: str = ZSRE_TEMPLATE) -> EditCase:
    """One MQuAKE case: one request per rewrite, one portability probe per multi-hop question.

    The questions are asked in the few-shot format (`multihop_prompt`), not with `template`,
    which the other question layouts use; `extra["questions"]` keeps them as written.
    """
    case_id = str(f.raw("case_id")) if f.has("case_id") else f.record_id
    requests, rewrite_questions, relation_ids = [], [], []
    rewrites = f.items("requested_rewrite")
    if not rewrites:
        raise f.error("has an empty 'requested_rewrite'; fill it in or remove the record")
    for i, item in enumerate(rewrites):
        rw = f.sub(f"requested_rewrite[{i}]", item)
        prompt = rw.text("prompt")
        if prompt.count("{}") != 1:
            raise rw.error(f"has a 'requested_rewrite[{i}].prompt' without exactly one '{{}}' for the subject")
        requests.append(EditRequest(
            prompt, rw.text("subject"), rw.text("target_new.str", what="the new target"),
            rw.text("target_true.str", what="the true target"), case_id,
        ))
        rewrite_questions.append(rw.text("question") if rw.has("question") else None)
        relation_ids.append(rw.raw("relation_id") if rw.has("relation_id") else None)
    new_answers = _unique((f.text("new_answer", what="the multi-hop answer after editing"),
                           *f.texts("new_answer_alias", required=False)))
    questions = f.texts("questions")
    return EditCase(
        case_id=case_id,
        suite=suite,
        requests=tuple(requests),
        portability=tuple(Probe(multihop_prompt(q), new_answers) for q in questions),
        extra={
            "questions": questions,
            "answer": f.text("answer") if f.has("answer") else None,
            "answer_alias": f.texts("answer_alias", required=False),
            "single_hops": f.raw("single_hops") if f.has("single_hops") else [],
            "new_single_hops": f.raw("new_single_hops") if f.has("new_single_hops") else [],
            "rewrite_questions": tuple(rewrite_questions),
            "relation_ids": tuple(relation_ids),
            "portability_kinds": ("multi_hop",) * len(questions),
            "prompt_format": MULTIHOP_FORMAT,
        },
    )
