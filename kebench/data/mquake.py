"""MQuAKE (Zhong et al., 2023) multi-hop cases in the original layout, parsed into `EditCase`s.

A case applies all its rewrites, then asks multi-hop questions whose answer
follows only if the edits compose. The multi-hop questions become portability
probes (answer: `new_answer` and its aliases); the original answers and the
single-hop chains stay in `extra` for metrics that want them.
"""

from __future__ import annotations

from kebench.data.case import EditCase, EditRequest, Probe
from kebench.data.fields import Fields
from kebench.data.prompts import apply_template
from kebench.data.zsre import ZSRE_TEMPLATE

EXPECTED = (
    "MQuAKE format (case_id, requested_rewrite [{prompt with '{}', subject, target_new.str, target_true.str}], "
    "questions, new_answer, new_answer_alias, answer, answer_alias, single_hops, new_single_hops)"
)


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_mquake(f: Fields, suite: str, template: str = ZSRE_TEMPLATE) -> EditCase:
    """One MQuAKE case: one request per rewrite, one portability probe per multi-hop question."""
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
        portability=tuple(Probe(apply_template(template, q), new_answers) for q in questions),
        extra={
            "questions": questions,
            "answer": f.text("answer") if f.has("answer") else None,
            "answer_alias": f.texts("answer_alias", required=False),
            "single_hops": f.raw("single_hops") if f.has("single_hops") else [],
            "new_single_hops": f.raw("new_single_hops") if f.has("new_single_hops") else [],
            "rewrite_questions": tuple(rewrite_questions),
            "relation_ids": tuple(relation_ids),
            "portability_kinds": ("multi_hop",) * len(questions),
            "template": template,
        },
    )
