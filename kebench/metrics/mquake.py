"""MQuAKE metrics: do single edits take, and do multi-hop questions follow from them?

- edit-wise accuracy: fraction of a case's edits whose filled cloze prompt greedily
  generates the new object;
- multi-hop accuracy: the case counts if ANY of its (paraphrased) multi-hop questions is
  answered with the new answer or an alias (MQuAKE's rule);
- `*_original`: the same against the pre-edit facts (each edit's `target_true`; the case's
  `extra["answer"]`/`extra["answer_alias"]`), so an unedited model scores meaningfully.
Answers match when they occur as whole words in the normalised first line of the
generation (`contains_match`): models answer "Paris" or "It is Paris".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kebench.data.case import EditCase
from kebench.errors import DataError
from kebench.metrics.text import contains_match
from kebench.scoring import Condition, greedy_generate


def _original_answers(case: EditCase) -> tuple[str, ...]:
    answer = case.extra.get("answer")
    if not answer:
        raise DataError(
            f"MQuAKE case {case.case_id} has no extra['answer'] (the pre-edit multi-hop answer): "
            "load it from an MQuAKE file with 'answer' and 'answer_alias'"
        )
    return (answer, *case.extra.get("answer_alias", ()))


def mquake_record(
    case_id: str,
    edit_generations: Sequence[str],
    new_targets: Sequence[str],
    true_targets: Sequence[str],
    question_generations: Sequence[str],
    new_answers: Sequence[Sequence[str]],
    original_answers: Sequence[str],
) -> dict[str, Any]:
    """One case's record from its generations; questions absent -> no multi-hop fields."""
    if not edit_generations or len(edit_generations) != len(new_targets) or len(new_targets) != len(true_targets):
        raise ValueError("mquake_record needs one generation, new and true target per edit")
    new_hits = [contains_match(g, t) for g, t in zip(edit_generations, new_targets)]
    old_hits = [contains_match(g, t) for g, t in zip(edit_generations, true_targets)]
    record: dict[str, Any] = {
        "case_id": case_id,
        "edit_accuracy": sum(new_hits) / len(new_hits),
        "edit_accuracy_original": sum(old_hits) / len(old_hits),
    }
    if question_generations:
        q_new = [contains_match(g, a) for g, a in zip(question_generations, new_answers, strict=True)]
        q_old = [contains_match(g, original_answers) for g in question_generations]
        record["multihop_accuracy"] = float(any(q_new))
        record["multihop_accuracy_original"] = float(any(q_old))
        record["multihop_question_accuracy"] = sum(q_new) / len(q_new)
        record["multihop_question_accuracy_original"] = sum(q_old) / len(q_old)
    record["generations"] = {"edits": list(edit_generations), "questions": list(question_generations)}
    return record


def mquake_evaluate(
    lm: Any,
    cases: Sequence[EditCase],
    condition: Condition | None = None,
    *,
    batch_size: int = 32,
    max_new_tokens: int = 20,
) -> list[dict[str, Any]]:
    """Score a chunk of MQuAKE cases on the (edited) model with one `greedy_generate` call."""
    prompts: list[str] = []
    for case in cases:
        for request in case.requests:
            if request.target_true is None:
                raise DataError(f"MQuAKE case {case.case_id} has an edit without target_true: reload the MQuAKE file")
        prompts.extend(r.text for r in case.requests)
        prompts.extend(p.prompt for p in case.portability)
    outputs = greedy_generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, condition=condition)

    records, k = [], 0
    for case in cases:
        n_edits, n_questions = len(case.requests), len(case.portability)
        edits, questions = outputs[k : k + n_edits], outputs[k + n_edits : k + n_edits + n_questions]
        k += n_edits + n_questions
        records.append(
            mquake_record(
                case.case_id,
                edits,
                [r.target_new for r in case.requests],
                [r.target_true or "" for r in case.requests],
                questions,
                [p.answers for p in case.portability],
                _original_answers(case),
            )
        )
    assert k == len(outputs)
    return records
