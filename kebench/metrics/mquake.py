"""MQuAKE metrics: do single edits take, and do multi-hop questions follow from them?

- edit-wise accuracy: fraction of a case's edits whose filled cloze prompt greedily
  generates the new object: the SQuAD-normalised continuation begins with it (`starts_with`;
  a cloze continuation goes on after the object, and an object named later in the line, as in
  "... is German, and the official language of the EU is English.", is not the model's answer);
- multi-hop accuracy: the case counts if ANY of its (paraphrased) multi-hop questions is
  answered with the new answer or an alias (MQuAKE's rule). Each question is asked after
  MQuAKE-style few-shot demonstrations (`kebench.data.mquake.multihop_prompt`), generation
  stops at the end of the answer line, and the line must BE the answer or an alias after SQuAD
  normalisation (`exact_match`), as MQuAKE compares answers;
- `*_original`: the same against the pre-edit facts (each edit's `target_true`; the case's
  `extra["answer"]`/`extra["answer_alias"]`), so an unedited model scores meaningfully.

Records name this protocol (`protocol`: "mquake-few-shot-em"); records without it were scored with
the zsRE question template, every answer (edits too) counted where it occurred in the first line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kebench.data.case import EditCase
from kebench.data.mquake import MULTIHOP_FORMAT
from kebench.errors import DataError
from kebench.metrics.text import answer_text, exact_match
from kebench.scoring import Condition, greedy_generate


#: What a record was scored by: multi-hop questions asked few-shot (`MULTIHOP_FORMAT`), exact match;
#: cloze edits by the normalised continuation's start.
PROTOCOL = f"{MULTIHOP_FORMAT}-em"


def _original_answers(case: EditCase) -> tuple[str, ...]:
    answer = case.extra.get("answer")
    if not answer:
        raise DataError(
            f"MQuAKE case {case.case_id} has no extra['answer'] (the pre-edit multi-hop answer): "
            "load it from an MQuAKE file with 'answer' and 'answer_alias'"
        )
    return (answer, *case.extra.get("answer_alias", ()))


def starts_with(generation: str, target: str) -> bool:
    """The generation's first line, SQuAD-normalised, begins with the normalised target as whole tokens."""
    want = answer_text(target).split() or answer_text(target, articles=False).split()
    got = answer_text(generation, articles=bool(answer_text(target))).split()
    return bool(want) and got[: len(want)] == want


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
    new_hits = [starts_with(g, t) for g, t in zip(edit_generations, new_targets)]
    old_hits = [starts_with(g, t) for g, t in zip(edit_generations, true_targets)]
    record: dict[str, Any] = {
        "case_id": case_id,
        "edit_accuracy": sum(new_hits) / len(new_hits),
        "edit_accuracy_original": sum(old_hits) / len(old_hits),
    }
    if question_generations:
        q_new = [exact_match(g, a) for g, a in zip(question_generations, new_answers, strict=True)]
        q_old = [exact_match(g, original_answers) for g in question_generations]
        record["multihop_accuracy"] = float(any(q_new))
        record["multihop_accuracy_original"] = float(any(q_old))
        record["multihop_question_accuracy"] = sum(q_new) / len(q_new)
        record["multihop_question_accuracy_original"] = sum(q_old) / len(q_old)
    record["protocol"] = PROTOCOL
    record["generations"] = {"edits": list(edit_generations), "questions": list(question_generations)}
    return record


def answer_lines(
    lm: Any,
    prompts: Sequence[str],
    asked: Sequence[str],
    *,
    max_new_tokens: int = 20,
    batch_size: int = 32,
    condition: Condition | None = None,
) -> list[str]:
    """Greedy answer line of each few-shot prompt, in input order; each row stops at the end of its line.

    `condition` receives `asked` (the questions as written, one per prompt) rather than the prompts:
    the demonstrations are the harness's, so a query-dependent editor decides on the question.
    """
    if len(asked) != len(prompts):
        raise ValueError(f"answer_lines needs one question per prompt, got {len(asked)} for {len(prompts)}")
    return greedy_generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, condition=condition,
                           asked=asked, answer_line=True)


def _asked(case: EditCase) -> list[str]:
    """The multi-hop questions as written (for `condition`); the probe prompts where a case lacks them."""
    questions = list(case.extra.get("questions") or ())
    return questions if len(questions) == len(case.portability) else [p.prompt for p in case.portability]


def mquake_evaluate(
    lm: Any,
    cases: Sequence[EditCase],
    condition: Condition | None = None,
    *,
    batch_size: int = 32,
    max_new_tokens: int = 20,
) -> list[dict[str, Any]]:
    """Score a chunk of MQuAKE cases on the (edited) model: one `greedy_generate` call for the cloze
    prompts, one `answer_lines` call for the few-shot multi-hop questions."""
    cloze: list[str] = []
    questions: list[str] = []
    asked: list[str] = []
    for case in cases:
        for request in case.requests:
            if request.target_true is None:
                raise DataError(f"MQuAKE case {case.case_id} has an edit without target_true: reload the MQuAKE file")
        cloze.extend(r.text for r in case.requests)
        questions.extend(p.prompt for p in case.portability)
        asked.extend(_asked(case))
    edit_out = greedy_generate(lm, cloze, max_new_tokens=max_new_tokens, batch_size=batch_size, condition=condition)
    question_out = (
        answer_lines(lm, questions, asked, max_new_tokens=max_new_tokens, batch_size=batch_size, condition=condition)
        if questions else []
    )

    records, k, j = [], 0, 0
    for case in cases:
        n_edits, n_questions = len(case.requests), len(case.portability)
        edits, answers = edit_out[k : k + n_edits], question_out[j : j + n_questions]
        k, j = k + n_edits, j + n_questions
        records.append(
            mquake_record(
                case.case_id,
                edits,
                [r.target_new for r in case.requests],
                [r.target_true or "" for r in case.requests],
                answers,
                [p.answers for p in case.portability],
                _original_answers(case),
            )
        )
    assert k == len(edit_out) and j == len(question_out)
    return records
