"""zsRE question answering edits (MEND split and KnowEdit layout), parsed into `EditCase`s.

zsRE items are questions, not cloze prompts, so a decoder LM sees each question
wrapped in a template (`ZSRE_TEMPLATE`); the edit prompt, paraphrases, the NQ
locality question and portability questions are all wrapped the same way.
KnowEdit's `Relation_Specificity` locality prompts are cloze statements
("The taxon rank of X is") and are used as they are, as EasyEdit does.
"""

from __future__ import annotations

from typing import Any

from kebench.data.case import EditCase, EditRequest, Probe
from kebench.data.fields import Fields
from kebench.data.prompts import apply_template, subject_slot

# MeG's short-answer template (its Llama-3 variant). On SmolLM2-Instruct, "Question: {}\nAnswer:"
# makes the model end its turn at once (first token <|im_end|>) on many questions; this one gets
# short direct answers ("Volvo B12M", "Ramalinaceae") more often.
ZSRE_TEMPLATE = "Answer the following question in less than 5 words: {}\nAnswer:"

MEND_EXPECTED = (
    "zsRE MEND format (subject, src, alt, answers, rephrase, loc, loc_ans, optional portability "
    "{New Question, New Answer})"
)
KNOWEDIT_EXPECTED = (
    "KnowEdit format (subject, prompt, target_new, ground_truth, rephrase_prompt, "
    "locality {kind: [{prompt, ground_truth}]}, portability {kind: [{prompt, ground_truth}]})"
)

NQ_PREFIX = "nq question:"


def _request(f: Fields, path: str, question: str, subject: str, target_new: str,
             target_true: str | None, case_id: str, template: str) -> tuple[EditRequest, bool]:
    """The templated edit question with "{}" at the subject; (request, whether the subject was found).

    A question that does not name its subject gets the slot at its very end with
    an empty subject, so `.text` is still the question and subject-position
    editors use the prompt's last token.
    """
    slot = subject_slot(f, path, question, subject)
    if slot is None:
        prompt, subject, found = apply_template(template, question) + "{}", "", False
    else:
        prompt, subject, found = apply_template(template, slot[0]), slot[1], True
    return EditRequest(prompt, subject, target_new, target_true, case_id), found


def _strip_nq(question: str) -> str:
    if question.lower().startswith(NQ_PREFIX):
        return question[len(NQ_PREFIX):].strip()
    return question


def parse_mend(f: Fields, suite: str, template: str = ZSRE_TEMPLATE) -> EditCase:
    """One MEND/EasyEdit zsRE record; target_true is the first original answer."""
    case_id = f.record_id
    answers = f.texts("answers", required=False)
    question = f.text("src")
    request, found = _request(
        f, "src", question, f.text("subject"), f.text("alt", what="the new target"),
        answers[0] if answers else None, case_id, template,
    )
    loc = Probe(apply_template(template, _strip_nq(f.text("loc"))), f.texts("loc_ans", what="the locality answer"))
    portability = []
    if f.has("portability"):
        raw = f.raw("portability")
        for i, item in enumerate(raw if isinstance(raw, list) else [raw]):
            p = f.sub(f"portability[{i}]" if isinstance(raw, list) else "portability", item)
            portability.append(Probe(apply_template(template, p.text("New Question")), p.texts("New Answer")))
    extra: dict[str, Any] = {"question": question, "answers": answers, "subject_in_prompt": found, "template": template}
    if portability:
        extra["portability_kinds"] = ("one_hop",) * len(portability)
    return EditCase(
        case_id=case_id,
        suite=suite,
        requests=(request,),
        paraphrases=tuple(apply_template(template, q) for q in f.texts("rephrase")),
        neighbourhood=(loc,),
        portability=tuple(portability),
        extra=extra,
    )


def _probe_groups(f: Fields, path: str, template: str | None) -> tuple[list[Probe], list[str]]:
    """KnowEdit's {kind: [{prompt, ground_truth}]} as probes plus the kind of each."""
    probes, kinds = [], []
    for kind, items in f.mapping(path).items():
        if not isinstance(items, list):
            items = [items]
        for i, item in enumerate(items):
            p = f.sub(f"{path}.{kind}[{i}]", item)
            prompt = p.text("prompt")
            probes.append(Probe(apply_template(template, prompt) if template else prompt, p.texts("ground_truth")))
            kinds.append(kind)
    return probes, kinds


def parse_knowedit(f: Fields, suite: str, template: str = ZSRE_TEMPLATE) -> EditCase:
    """One KnowEdit record; locality prompts stay as written, portability questions are templated."""
    case_id = f.record_id
    ground_truth = f.texts("ground_truth", required=False)
    question = f.text("prompt")
    request, found = _request(
        f, "prompt", question, f.text("subject"), f.text("target_new", what="the new target"),
        ground_truth[0] if ground_truth else None, case_id, template,
    )
    neighbourhood, neighbourhood_kinds = _probe_groups(f, "locality", None) if f.has("locality") else ([], [])
    portability, portability_kinds = _probe_groups(f, "portability", template) if f.has("portability") else ([], [])
    return EditCase(
        case_id=case_id,
        suite=suite,
        requests=(request,),
        paraphrases=tuple(apply_template(template, q) for q in f.texts("rephrase_prompt", required=False)),
        neighbourhood=tuple(neighbourhood),
        portability=tuple(portability),
        extra={
            "question": question,
            "answers": ground_truth,
            "subject_in_prompt": found,
            "template": template,
            "neighbourhood_kinds": tuple(neighbourhood_kinds),
            "portability_kinds": tuple(portability_kinds),
        },
    )


def question_key(case: EditCase) -> str:
    """The raw question of a zsRE case, for de-duplication across files (whitespace/case folded)."""
    return " ".join(case.extra["question"].split()).lower()


def dedup_by_question(cases: list[EditCase]) -> list[EditCase]:
    """Keep the first case of each zsRE question (files listed first win)."""
    seen: set[str] = set()
    out = []
    for case in cases:
        key = question_key(case)
        if key not in seen:
            seen.add(key)
            out.append(case)
    return out
