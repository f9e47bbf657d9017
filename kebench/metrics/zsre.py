"""ZsRE metrics: teacher-forced token accuracy (TF) and greedy generation, per probe kind.

- reliability: the rewrite prompt should give `target_new`;
- generality: its paraphrases should too (mean over paraphrases);
- locality: unrelated questions should be answered as the UNEDITED model answered them. The
  reference is recorded before editing by `zsre_reference`: the greedy answer line, and the
  argmax token at each position of the probe's answer text under teacher forcing. Locality TF is
  the fraction of those positions where the edited model's argmax is unchanged; locality EM is
  whether the normalised answer line is unchanged (so a wrong-but-stable answer counts);
- portability (where a case has it): TF and generation metrics against the portability answers.

TF scores the canonical answer after the prompt as written (no chat template), as MEMIT's and
EasyEdit's token accuracy do. Generation (`generate_answers`) wraps the prompt as the user turn
of the tokenizer's chat template where it has one (EasyEdit's `use_chat_template`; switch it off
with KEBENCH_ZSRE_CHAT_TEMPLATE=0), decodes greedily and stops at the end of the answer line.
The answer line is compared after SQuAD normalisation (`kebench.metrics.text`):
`*_em` strict exact match, `*_contains` the answer span contained in it; both accept any alias.
Every record names the prompt format it was generated with (`prompt_format`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any


from kebench.data.case import EditCase
from kebench.errors import ConfigError, DataError
from kebench.metrics.aggregate import mean
from kebench.metrics.text import exact_match, same_answer, span_match
from kebench.scoring import Condition, greedy_generate, score_targets
from kebench.tokens import encode_prompt

#: Environment switch for the chat template in ZsRE generation: "1" (default) applies it where the
#: tokenizer has one, "0" generates from the bare prompt (the protocol of runs before it existed).
CHAT_TEMPLATE_ENV = "KEBENCH_ZSRE_CHAT_TEMPLATE"
MAX_NEW_TOKENS = 20


def chat_template_setting() -> bool:
    """Whether ZsRE generation should use the chat template (KEBENCH_ZSRE_CHAT_TEMPLATE, default on)."""
    raw = os.environ.get(CHAT_TEMPLATE_ENV, "1").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{CHAT_TEMPLATE_ENV}={raw!r}: use 1 (chat template where the tokenizer has one) or 0 (bare prompt)")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_format(tokenizer: Any, chat_template: bool | None = None) -> str:
    """"chat-template" when generation wraps prompts in the tokenizer's template, else "plain"."""
    wanted = chat_template_setting() if chat_template is None else chat_template
    return "chat-template" if wanted and has_chat_template(tokenizer) else "plain"


def encode_question(tokenizer: Any, prompt: str, fmt: str) -> list[int]:
    """Prompt ids for generation: the prompt as the user turn plus the assistant header ("chat-template"),
    or the prompt as it is ("plain"). The template writes its own special tokens, so none are added."""
    if fmt == "plain":
        return encode_prompt(tokenizer, prompt)
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def generate_answers(
    lm: Any,
    prompts: Sequence[str],
    fmt: str,
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 32,
    condition: Condition | None = None,
) -> list[str]:
    """Greedy answer line of each prompt (special tokens dropped), in input order.

    Like `kebench.scoring.greedy_generate`, but the ids come from `encode_question` (chat
    template) and each row stops at the end of its first line. `condition` still receives the
    prompts as written, so query-dependent editors see the text they were fitted on.
    """
    encoded = [encode_question(lm.tokenizer, p, fmt) for p in prompts]
    return greedy_generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, condition=condition,
                           encoded=encoded, answer_line=True)


def token_agreement(after: Sequence[int], before: Sequence[int]) -> float:
    """Fraction of positions where the edited model's argmax token equals the unedited one's."""
    if len(after) != len(before) or not before:
        raise DataError(
            f"locality reference has {len(before)} answer tokens but the probe now has {len(after)}: "
            "recompute zsre_reference with the same tokenizer and cases"
        )
    return sum(a == b for a, b in zip(after, before)) / len(before)


def zsre_reference(
    lm: Any,
    cases: Sequence[EditCase],
    *,
    batch_size: int = 32,
    max_new_tokens: int = MAX_NEW_TOKENS,
    chat_template: bool | None = None,
) -> list[dict[str, Any]]:
    """The unedited model's locality answers, per case: call BEFORE editing.

    Each record: {"case_id", "prompt_format", "locality": [{"prompt", "answer", "predicted",
    "generation"}]}, `predicted` being the argmax token ids over the answer's positions and
    `generation` the greedy answer line. JSON-able, so it can be stored with the run and reused on
    resume. `chat_template`: None follows KEBENCH_ZSRE_CHAT_TEMPLATE.
    """
    fmt = prompt_format(lm.tokenizer, chat_template)
    probes = [(ci, probe) for ci, case in enumerate(cases) for probe in case.neighbourhood]
    prompts = [p.prompt for _, p in probes]
    scores = score_targets(lm, prompts, [p.answers[0] for _, p in probes], batch_size=batch_size)
    generations = generate_answers(lm, prompts, fmt, max_new_tokens=max_new_tokens, batch_size=batch_size)
    records: list[dict[str, Any]] = [
        {"case_id": case.case_id, "prompt_format": fmt, "locality": []} for case in cases
    ]
    for (ci, probe), score, gen in zip(probes, scores, generations, strict=True):
        records[ci]["locality"].append(
            {"prompt": probe.prompt, "answer": probe.answers[0], "predicted": score.token_predicted, "generation": gen}
        )
    return records


def _reference_for(case: EditCase, references: Mapping[str, dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    ref = references.get(case.case_id)
    if ref is None:
        raise DataError(f"no locality reference for ZsRE case {case.case_id}: run zsre_reference on it before editing")
    recorded = ref.get("prompt_format")
    if recorded != fmt:
        raise DataError(
            f"the locality reference of ZsRE case {case.case_id} was generated with prompt format "
            f"{recorded or 'unrecorded (whole 20-token continuations, before answer lines)'!r} but this "
            f"evaluation uses {fmt!r}: recompute zsre_reference (delete the run's pre-edit cache) "
            f"or set {CHAT_TEMPLATE_ENV} to match"
        )
    entries = ref["locality"]
    expected = [(p.prompt, p.answers[0]) for p in case.neighbourhood]
    if [(e["prompt"], e["answer"]) for e in entries] != expected:
        raise DataError(
            f"locality reference of ZsRE case {case.case_id} was recorded for other probes: "
            "recompute zsre_reference for these cases"
        )
    return entries


def zsre_evaluate(
    lm: Any,
    cases: Sequence[EditCase],
    references: Sequence[dict[str, Any]] | Mapping[str, dict[str, Any]],
    condition: Condition | None = None,
    *,
    batch_size: int = 32,
    max_new_tokens: int = MAX_NEW_TOKENS,
    chat_template: bool | None = None,
) -> list[dict[str, Any]]:
    """Score a chunk of ZsRE cases on the (edited) model: one record per case.

    `references` come from `zsre_reference` with the same prompt format (a list, or a mapping by
    case_id); they may cover more cases than this chunk. Per kind the record holds `<kind>_tf` and
    `<kind>_em`, and for reliability, generality and portability also `<kind>_contains`.
    """
    fmt = prompt_format(lm.tokenizer, chat_template)
    if not isinstance(references, Mapping):
        references = {r["case_id"]: r for r in references}
    refs = [_reference_for(case, references, fmt) for case in cases]

    # Every probe of the chunk: (case index, kind, prompt, canonical answer, all answers).
    probes: list[tuple[int, str, str, str, tuple[str, ...]]] = []
    for ci, case in enumerate(cases):
        for request in case.requests:
            probes.append((ci, "reliability", request.text, request.target_new, (request.target_new,)))
        for paraphrase in case.paraphrases:
            probes.append((ci, "generality", paraphrase, case.target_new, (case.target_new,)))
        for probe in case.neighbourhood:
            probes.append((ci, "locality", probe.prompt, probe.answers[0], probe.answers))
        for probe in case.portability:
            probes.append((ci, "portability", probe.prompt, probe.answers[0], probe.answers))

    prompts = [p[2] for p in probes]
    scores = score_targets(lm, prompts, [p[3] for p in probes], batch_size=batch_size, condition=condition)
    generations = generate_answers(
        lm, prompts, fmt, max_new_tokens=max_new_tokens, batch_size=batch_size, condition=condition
    )

    per_case: list[dict[str, dict[str, list[Any]]]] = [{} for _ in cases]
    locality_seen = [0] * len(cases)
    for (ci, kind, _prompt, _answer, answers), score, gen in zip(probes, scores, generations, strict=True):
        bucket = per_case[ci].setdefault(kind, {"tf": [], "em": [], "contains": [], "generations": []})
        bucket["generations"].append(gen)
        if kind == "locality":
            ref = refs[ci][locality_seen[ci]]
            locality_seen[ci] += 1
            bucket["tf"].append(token_agreement(score.token_predicted, ref["predicted"]))
            bucket["em"].append(float(same_answer(gen, ref["generation"])))
        else:
            bucket["tf"].append(score.accuracy)
            bucket["em"].append(float(exact_match(gen, answers)))
            bucket["contains"].append(float(span_match(gen, answers)))

    records = []
    for case, buckets in zip(cases, per_case):
        record: dict[str, Any] = {"case_id": case.case_id, "prompt_format": fmt}
        for kind in ("reliability", "generality", "locality", "portability"):
            if kind not in buckets:
                continue
            record[f"{kind}_tf"] = mean(buckets[kind]["tf"])
            record[f"{kind}_em"] = mean(buckets[kind]["em"])
            if buckets[kind]["contains"]:
                record[f"{kind}_contains"] = mean(buckets[kind]["contains"])
        record["generations"] = {kind: b["generations"] for kind, b in buckets.items()}
        records.append(record)
    return records
