"""CounterFact metrics as in the ROME/MEMIT evaluation (probability comparisons, not generation).

Per prompt the model's length-normalised NLL of `target_new` and of the true answer are
compared (`pairs` below are (nll_new, nll_true)):
- efficacy (rewrite prompt) and paraphrase: success when NLL_new < NLL_true; magnitude
  P_new - P_true with P = exp(-NLL);
- neighbourhood (other subjects, same relation): success when NLL_true < NLL_new; magnitude
  P_true - P_new.
A case's value is the mean over its prompts (ROME averages per case, then over cases).
Fluency is ROME's weighted n-gram entropy of the prompt plus its greedy continuation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kebench.data.case import EditCase
from kebench.errors import DataError
from kebench.metrics.aggregate import mean
from kebench.metrics.fluency import mean_ngram_entropy
from kebench.scoring import Condition, greedy_generate, score_targets

NllPair = tuple[float, float]  # (nll of target_new, nll of the true answer)


def rewrite_success(pairs: Sequence[NllPair]) -> float:
    """Fraction of prompts where the new target is likelier than the true one (efficacy, paraphrase)."""
    return mean([float(new < true) for new, true in pairs])


def rewrite_magnitude(pairs: Sequence[NllPair]) -> float:
    """Mean P_new - P_true over prompts."""
    return mean([math.exp(-new) - math.exp(-true) for new, true in pairs])


def neighbourhood_success(pairs: Sequence[NllPair]) -> float:
    """Fraction of neighbourhood prompts where the true answer stays likelier than the new target."""
    return mean([float(true < new) for new, true in pairs])


def neighbourhood_magnitude(pairs: Sequence[NllPair]) -> float:
    """Mean P_true - P_new over neighbourhood prompts."""
    return mean([math.exp(-true) - math.exp(-new) for new, true in pairs])


def neighbourhood_kept(pre: Sequence[dict[str, Any]], post: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Locality against the unedited model: the fraction of neighbourhood prompts whose preference
    (true vs new answer) is the same after the edit as before it, over all prompts of all cases.

    Neighbourhood success alone is bounded by what the unedited model gets right (a small model
    prefers the new target on many neighbours before any edit); this counts what the edit changed."""
    same = total = 0
    for a, b in zip(pre, post, strict=True):
        kept, prompts = neighbourhood_kept_counts(a, b)
        same += kept
        total += prompts
    return {"neighbourhood_kept": same / total} if total else {}


def neighbourhood_kept_counts(pre: dict[str, Any], post: dict[str, Any]) -> tuple[int, int]:
    """One case's part of `neighbourhood_kept`: (prompts whose preference the edit kept, prompts)."""
    if pre["case_id"] != post["case_id"]:
        raise ValueError(f"pre/post records out of order: {pre['case_id']} vs {post['case_id']}")
    before, after = pre["nll"].get("neighbourhood", []), post["nll"].get("neighbourhood", [])
    same = sum((t0 < n0) == (t1 < n1) for (n0, t0), (n1, t1) in zip(before, after, strict=True))
    return same, len(before)


def counterfact_record(
    case_id: str,
    rewrite: Sequence[NllPair],
    paraphrase: Sequence[NllPair],
    neighbourhood: Sequence[NllPair],
    generations: Sequence[str] = (),
) -> dict[str, Any]:
    """One case's record from its NLL pairs and fluency texts; absent probe kinds give no field."""
    record: dict[str, Any] = {
        "case_id": case_id,
        "efficacy_success": rewrite_success(rewrite),
        "efficacy_magnitude": rewrite_magnitude(rewrite),
    }
    if paraphrase:
        record["paraphrase_success"] = rewrite_success(paraphrase)
        record["paraphrase_magnitude"] = rewrite_magnitude(paraphrase)
    if neighbourhood:
        record["neighbourhood_success"] = neighbourhood_success(neighbourhood)
        record["neighbourhood_magnitude"] = neighbourhood_magnitude(neighbourhood)
    if generations:
        record["ngram_entropy"] = mean_ngram_entropy(generations)
        record["generations"] = list(generations)
    record["nll"] = {
        "rewrite": [list(p) for p in rewrite],
        "paraphrase": [list(p) for p in paraphrase],
        "neighbourhood": [list(p) for p in neighbourhood],
    }
    return record


def counterfact_evaluate(
    lm: Any,
    cases: Sequence[EditCase],
    condition: Condition | None = None,
    *,
    batch_size: int = 32,
    generation_tokens: int = 50,
) -> list[dict[str, Any]]:
    """Score a chunk of CounterFact cases on the (edited) model: one record per case.

    All prompts of the chunk go through one `score_targets` call and one `greedy_generate`
    call. `generation_tokens=0` skips fluency.
    """
    prompts: list[str] = []
    targets: list[str] = []
    slots: list[tuple[int, str]] = []  # (case index, kind) per (new, true) pair of scored rows

    def add(ci: int, kind: str, prompt: str, new: str, true: str) -> None:
        prompts.extend([prompt, prompt])
        targets.extend([new, true])
        slots.append((ci, kind))

    for ci, case in enumerate(cases):
        for request in case.requests:
            if request.target_true is None:
                raise DataError(
                    f"CounterFact case {case.case_id} has no target_true: efficacy compares new and true targets; "
                    "load it from a CounterFact file that gives the true object"
                )
            add(ci, "rewrite", request.text, request.target_new, request.target_true)
        for paraphrase in case.paraphrases:
            add(ci, "paraphrase", paraphrase, case.target_new, case.target_true or "")
        for probe in case.neighbourhood:
            add(ci, "neighbourhood", probe.prompt, case.target_new, probe.answers[0])

    scores = score_targets(lm, prompts, targets, batch_size=batch_size, condition=condition)
    pairs: list[dict[str, list[NllPair]]] = [{"rewrite": [], "paraphrase": [], "neighbourhood": []} for _ in cases]
    for k, (ci, kind) in enumerate(slots):
        pairs[ci][kind].append((scores[2 * k].nll, scores[2 * k + 1].nll))

    texts: list[list[str]] = [[] for _ in cases]
    if generation_tokens > 0:
        gen_prompts = [(ci, p) for ci, case in enumerate(cases) for p in case.generation_prompts]
        outputs = greedy_generate(
            lm, [p for _, p in gen_prompts], max_new_tokens=generation_tokens, batch_size=batch_size, condition=condition
        )
        for (ci, prompt), out in zip(gen_prompts, outputs, strict=True):
            texts[ci].append(prompt + out)  # ROME measures the whole text, prompt included

    return [
        counterfact_record(case.case_id, p["rewrite"], p["paraphrase"], p["neighbourhood"], texts[ci])
        for ci, (case, p) in enumerate(zip(cases, pairs))
    ]
