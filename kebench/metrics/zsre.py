"""ZsRE metrics, each measured two ways: teacher-forced token accuracy (TF) and greedy exact match.

- reliability: the rewrite prompt should give `target_new`;
- generality: its paraphrases should too (mean over paraphrases);
- locality: unrelated questions should be answered as the UNEDITED model answered them. The
  reference is recorded before editing by `zsre_reference`: the greedy answer, and the argmax
  token at each position of the probe's answer text under teacher forcing. Locality TF is the
  fraction of those positions where the edited model's argmax is unchanged; locality EM is
  whether the normalised greedy answer is unchanged (so a wrong-but-stable answer counts);
- portability (where a case has it): TF and EM against the portability answers.
EM compares normalised strings (`kebench.metrics.text`); `*_prefix` is the lenient
startswith variant some papers report. TF is scored on the canonical answer, EM/prefix accept
any alias.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kebench.data.case import EditCase
from kebench.errors import DataError
from kebench.metrics.text import exact_match, prefix_match, same_answer
from kebench.scoring import Condition, greedy_generate, score_targets


def token_agreement(after: Sequence[int], before: Sequence[int]) -> float:
    """Fraction of positions where the edited model's argmax token equals the unedited one's."""
    if len(after) != len(before) or not before:
        raise DataError(
            f"locality reference has {len(before)} answer tokens but the probe now has {len(after)}: "
            "recompute zsre_reference with the same tokenizer and cases"
        )
    return sum(a == b for a, b in zip(after, before)) / len(before)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def zsre_reference(
    lm: Any, cases: Sequence[EditCase], *, batch_size: int = 32, max_new_tokens: int = 20
) -> list[dict[str, Any]]:
    """The unedited model's locality answers, per case: call BEFORE editing.

    Each record: {"case_id", "locality": [{"prompt", "answer", "predicted", "generation"}]},
    `predicted` being the argmax token ids over the answer's positions. JSON-able, so it can
    be stored with the run and reused on resume.
    """
    probes = [(ci, probe) for ci, case in enumerate(cases) for probe in case.neighbourhood]
    prompts = [p.prompt for _, p in probes]
    scores = score_targets(lm, prompts, [p.answers[0] for _, p in probes], batch_size=batch_size)
    generations = greedy_generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    records: list[dict[str, Any]] = [{"case_id": case.case_id, "locality": []} for case in cases]
    for (ci, probe), score, gen in zip(probes, scores, generations, strict=True):
        records[ci]["locality"].append(
            {"prompt": probe.prompt, "answer": probe.answers[0], "predicted": score.token_predicted, "generation": gen}
        )
    return records


def _reference_for(case: EditCase, references: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ref = references.get(case.case_id)
    if ref is None:
        raise DataError(f"no locality reference for ZsRE case {case.case_id}: run zsre_reference on it before editing")
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
    max_new_tokens: int = 20,
) -> list[dict[str, Any]]:
    """Score a chunk of ZsRE cases on the (edited) model: one record per case.

    `references` come from `zsre_reference` (a list, or a mapping by case_id); they may cover
    more cases than this chunk.
    """
    if not isinstance(references, Mapping):
        references = {r["case_id"]: r for r in references}
    refs = [_reference_for(case, references) for case in cases]

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
    generations = greedy_generate(
        lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, condition=condition
    )

    per_case: list[dict[str, dict[str, list[Any]]]] = [{} for _ in cases]
    locality_seen = [0] * len(cases)
    for (ci, kind, _prompt, _answer, answers), score, gen in zip(probes, scores, generations, strict=True):
        bucket = per_case[ci].setdefault(kind, {"tf": [], "em": [], "prefix": [], "generations": []})
        bucket["generations"].append(gen)
        if kind == "locality":
            ref = refs[ci][locality_seen[ci]]
            locality_seen[ci] += 1
            bucket["tf"].append(token_agreement(score.token_predicted, ref["predicted"]))
            bucket["em"].append(float(same_answer(gen, ref["generation"])))
        else:
            bucket["tf"].append(score.accuracy)
            bucket["em"].append(float(exact_match(gen, answers)))
            bucket["prefix"].append(float(prefix_match(gen, answers)))

    records = []
    for case, buckets in zip(cases, per_case):
        record: dict[str, Any] = {"case_id": case.case_id}
        for kind in ("reliability", "generality", "locality", "portability"):
            if kind not in buckets:
                continue
            record[f"{kind}_tf"] = _mean(buckets[kind]["tf"])
            record[f"{kind}_em"] = _mean(buckets[kind]["em"])
            if buckets[kind]["prefix"]:
                record[f"{kind}_prefix"] = _mean(buckets[kind]["prefix"])
        record["generations"] = {kind: b["generations"] for kind, b in buckets.items()}
        records.append(record)
    return records
