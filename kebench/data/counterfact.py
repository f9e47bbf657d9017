"""CounterFact (Meng et al., ROME 2022) in its two published layouts, parsed into `EditCase`s.

- EasyEdit layout: one flat record per case with a filled-in prompt, one rephrase
  and one neighbourhood (locality) prompt.
- ROME layout: `requested_rewrite` with a "{}" prompt, 2 paraphrases, 10
  neighbourhood prompts and 10 generation prompts (fluency).

Neighbourhood prompts are about other subjects that share the relation and the
true object, so their expected answer is the edited fact's true target.
"""

from __future__ import annotations

from kebench.data.case import EditCase, EditRequest, Probe
from kebench.data.fields import Fields
from kebench.data.prompts import subject_slot

EASYEDIT_EXPECTED = (
    "CounterFact EasyEdit format (case_id, prompt, subject, target_new, ground_truth, "
    "rephrase_prompt, locality_prompt, locality_ground_truth)"
)
ROME_EXPECTED = (
    "CounterFact ROME format (case_id, requested_rewrite {prompt with '{}', subject, target_new.str, "
    "target_true.str}, paraphrase_prompts, neighborhood_prompts, generation_prompts)"
)


def parse_easyedit(f: Fields, suite: str, template: str | None = None) -> EditCase:
    """One EasyEdit record; the subject's last occurrence in the filled prompt becomes "{}".

    `template` is unused: CounterFact prompts are cloze statements, not questions.
    """
    case_id = str(f.raw("case_id"))
    text = f.text("prompt")
    subject = f.text("subject")
    slot = subject_slot(f, "prompt", text, subject)
    if slot is None:
        raise f.error(f"has subject {subject!r} that does not occur in its prompt {text!r}")
    prompt, subject = slot
    target_true = f.text("ground_truth", what="the true target")
    request = EditRequest(prompt, subject, f.text("target_new", what="the new target"), target_true, case_id)
    return EditCase(
        case_id=case_id,
        suite=suite,
        requests=(request,),
        paraphrases=f.texts("rephrase_prompt"),
        neighbourhood=(Probe(f.text("locality_prompt"), (f.text("locality_ground_truth"),)),),
    )


def parse_rome(f: Fields, suite: str, template: str | None = None) -> EditCase:
    """One ROME-layout record; attribute prompts (other subjects whose true object is target_new) go to extra."""
    case_id = str(f.raw("case_id"))
    rw = f.sub("requested_rewrite", f.raw("requested_rewrite"))
    prompt = rw.text("prompt")
    if prompt.count("{}") != 1:
        raise rw.error("has a 'requested_rewrite.prompt' without exactly one '{}' for the subject")
    target_true = rw.text("target_true.str", what="the true target")
    request = EditRequest(prompt, rw.text("subject"), rw.text("target_new.str", what="the new target"), target_true, case_id)
    extra = {
        "relation_id": rw.raw("relation_id") if rw.has("relation_id") else None,
        "attribute_prompts": f.texts("attribute_prompts", required=False),
    }
    if f.has("pararel_idx"):
        extra["pararel_idx"] = f.raw("pararel_idx")
    return EditCase(
        case_id=case_id,
        suite=suite,
        requests=(request,),
        paraphrases=f.texts("paraphrase_prompts"),
        neighbourhood=tuple(Probe(p, (target_true,)) for p in f.texts("neighborhood_prompts")),
        generation_prompts=f.texts("generation_prompts", required=False),
        extra=extra,
    )
