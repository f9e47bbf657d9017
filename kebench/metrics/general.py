"""General ability: what editing costs the model outside the edited cases (measured before and after).

Three probes, the same text before and after editing, each cheap on a CPU:

- **Held-out perplexity**: token-level perplexity (exp of the mean next-token NLL) on the last
  `PERPLEXITY_TOKENS` tokens of the raw WikiText-2 test split shipped with kebench, in windows of
  `PERPLEXITY_WINDOW` tokens. MEMIT/AlphaEdit's covariance statistics read the *start* of the same
  split (`stats_n_tokens`, 100,000 tokens by default, about a third of it), so the slice is text
  they never saw (`held_out_start` checks this).
- **Retained knowledge**: ROME's known facts (`known_1000.json`, 1,209 prompts such as "Vinson Massif
  is located in the continent of" → "Antarctica"). A fact is *known* when the model's greedy
  continuation begins with the attribute; that is computed in one teacher-forced pass (greedy
  decoding reproduces the attribute's tokens exactly when each is the argmax after the ones before).
  `retained_knowledge` = the share of the facts the unedited model knew that the edited model still
  knows, leaving out every fact whose subject one of the run's edits names.
- **Generic fluency**: ROME's weighted bi-/tri-gram entropy (bits) of each of `GENERIC_PROMPTS` plus
  its greedy 50-token continuation (the same generation protocol as kebench's CounterFact fluency:
  greedy, not ROME's top-k sampling of 100 tokens, so the number is not comparable to published ones).

Editors that condition on the query (MeG) see each window, prompt or fact text as the query.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kebench.data.corpus import wikitext_paragraphs
from kebench.data.shipped import file_sha256, read_records, shipped_path
from kebench.metrics.fluency import ngram_entropy
from kebench.models.loaded import LoadedModel
from kebench.scoring import Condition, _condition, _evaluating, _pad_id, greedy_generate, score_targets
from kebench.tokens import pad_right

KNOWN_FACTS_FILE = "known_1000.json"
PERPLEXITY_TOKENS = 4096
PERPLEXITY_WINDOW = 512
GENERATION_TOKENS = 50
#: Open-ended prompts on everyday topics, none about a CounterFact/ZsRE subject.
GENERIC_PROMPTS: tuple[str, ...] = (
    "The best way to learn a new language is",
    "Yesterday afternoon, the weather in the city",
    "A good breakfast usually includes",
    "The history of the printing press",
    "When you plant a tree, you should",
    "Scientists study the ocean because",
    "The most important part of a job interview is",
    "In the small village by the river,",
    "To bake bread at home, you need",
    "The main reason people enjoy music is",
    "Cities grew quickly during the industrial era because",
    "A healthy sleep routine means",
    "The library opened a new section for",
    "Most birds build their nests",
    "Learning to ride a bicycle",
    "The train left the station and",
    "Good teachers often",
    "Mountains are formed when",
    "The old letter in the drawer said",
    "Saving money every month helps",
)
#: A run says so when the edited model's held-out perplexity exceeds this multiple of the unedited one.
PERPLEXITY_ALARM_RATIO = 2.0


@dataclass(frozen=True)
class KnownFact:
    known_id: int
    subject: str
    prompt: str
    attribute: str


@functools.cache
def known_facts() -> tuple[KnownFact, ...]:
    """ROME's known facts as shipped (1,209), read once per process."""
    return tuple(
        KnownFact(int(r["known_id"]), str(r["subject"]), str(r["prompt"]), str(r["attribute"]))
        for r in read_records(shipped_path(KNOWN_FACTS_FILE))
    )


def perplexity_windows(tokenizer: Any, n_tokens: int = PERPLEXITY_TOKENS, window: int = PERPLEXITY_WINDOW) -> list[list[int]]:
    """The last `n_tokens` tokens of the clean WikiText-2 test text, cut into windows of `window` tokens."""
    stream: list[int] = []
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    for text in reversed(wikitext_paragraphs(unk_free=True)):
        stream = tokenizer(text, add_special_tokens=False)["input_ids"] + newline + stream
        if len(stream) >= n_tokens:
            break
    stream = stream[-n_tokens:]
    return [stream[i : i + window] for i in range(0, len(stream), window)]


def held_out_start(tokenizer: Any, n_tokens: int = PERPLEXITY_TOKENS) -> int:
    """How many tokens of the clean WikiText stream (as the covariance statistics read it) come before the
    perplexity slice: statistics with `stats_n_tokens` below this never see the slice."""
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    total = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + len(newline) for t in wikitext_paragraphs(True))
    return total - n_tokens


def perplexity(
    lm: LoadedModel, windows: Sequence[Sequence[int]], *, condition: Condition | None = None, batch_size: int = 8
) -> float:
    """exp(mean next-token NLL) over every predicted token of `windows` (each window scored on its own)."""
    tok, model = lm.tokenizer, lm.model
    total_nll, count = 0.0, 0
    with _evaluating(model):
        for start in range(0, len(windows), batch_size):
            batch = [list(w) for w in windows[start : start + batch_size]]
            ids, mask = pad_right(batch, _pad_id(tok))
            texts = tok.batch_decode(ids, skip_special_tokens=True)
            with _condition(condition, texts):
                logits = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False).logits
            logprobs = torch.log_softmax(logits[:, :-1].double(), dim=-1)
            targets = ids[:, 1:].to(logprobs.device)
            picked = logprobs.gather(-1, targets[..., None]).squeeze(-1)
            keep = mask[:, 1:].to(logprobs.device).bool()
            total_nll -= float(picked[keep].sum())
            count += int(keep.sum())
    mean = total_nll / count
    return math.exp(mean) if math.isfinite(mean) else mean  # NaN stays NaN: callers report it, never hide it


def known_correct(
    lm: LoadedModel, facts: Sequence[KnownFact], *, condition: Condition | None = None, batch_size: int = 32
) -> list[int]:
    """known_ids of the facts whose greedy continuation begins with the attribute."""
    scores = score_targets(
        lm, [f.prompt for f in facts], [f.attribute for f in facts], batch_size=batch_size, condition=condition
    )
    return [f.known_id for f, s in zip(facts, scores) if all(s.token_correct)]


def generic_fluency(lm: LoadedModel, *, condition: Condition | None = None, batch_size: int = 32) -> float:
    """Mean weighted n-gram entropy (bits) of each generic prompt plus its greedy continuation."""
    texts = greedy_generate(
        lm, GENERIC_PROMPTS, max_new_tokens=GENERATION_TOKENS, batch_size=batch_size, condition=condition
    )
    return sum(ngram_entropy(p + t) for p, t in zip(GENERIC_PROMPTS, texts)) / len(texts)


def measure(lm: LoadedModel, *, condition: Condition | None = None, batch_size: int = 32) -> dict[str, Any]:
    """One general-ability record: perplexity, the known facts answered, generic fluency."""
    facts = known_facts()
    ppl = perplexity(lm, perplexity_windows(lm.tokenizer), condition=condition, batch_size=max(1, batch_size // 4))
    if not math.isfinite(ppl):  # a broken model: the other probes would only fail on its non-finite logits
        return {"perplexity": ppl, "known_ids": [], "generic_fluency": math.nan}
    return {
        "perplexity": ppl,
        "known_ids": known_correct(lm, facts, condition=condition, batch_size=batch_size),
        "generic_fluency": generic_fluency(lm, condition=condition, batch_size=batch_size),
    }


def protocol(tokenizer: Any) -> dict[str, Any]:
    """What the general-ability numbers were measured on (results files record it)."""
    return {
        "perplexity": f"last {PERPLEXITY_TOKENS} tokens of the raw WikiText-2 test split (wikitext_dedup.txt lines "
        f"1-2947), windows of {PERPLEXITY_WINDOW}; statistics reading fewer than {held_out_start(tokenizer)} tokens "
        "never see it",
        "retained_knowledge": "ROME known_1000.json: share of the facts the unedited model's greedy continuation "
        "begins with the attribute that the edited model still gets, facts whose subject an edit names left out",
        "generic_fluency": f"ROME n-gram entropy of {len(GENERIC_PROMPTS)} generic prompts plus greedy "
        f"{GENERATION_TOKENS}-token continuations",
        "known_facts_sha256": file_sha256(shipped_path(KNOWN_FACTS_FILE)),
    }


def _touched(facts: Iterable[KnownFact], edited_subjects: Iterable[str]) -> set[int]:
    subjects = {s.strip().casefold() for s in edited_subjects}
    return {f.known_id for f in facts if f.subject.strip().casefold() in subjects}


def summarise(pre: dict[str, Any], post: dict[str, Any], edited_subjects: Iterable[str]) -> dict[str, Any]:
    """The general-ability block of a results file: pre and post numbers, what was lost, and an alarm line
    when the edited model's perplexity is not finite or above PERPLEXITY_ALARM_RATIO × the unedited one."""
    facts = known_facts()
    left_out = _touched(facts, edited_subjects)
    known_before = set(pre["known_ids"]) - left_out
    known_after = set(post["known_ids"]) - left_out
    # None when the unedited model knows none of the facts (a tiny random model): nothing to retain
    retained = len(known_before & known_after) / len(known_before) if known_before else None
    block: dict[str, Any] = {
        "pre": {"perplexity": pre["perplexity"], "known_facts": len(known_before), "generic_fluency": pre["generic_fluency"]},
        "post": {
            "perplexity": post["perplexity"],
            "retained_knowledge": retained,
            "generic_fluency": post["generic_fluency"],
        },
        "facts_left_out": len(left_out),
        "forgotten_ids": sorted(known_before - known_after),
        "alarm": None,
    }
    ppl0, ppl1 = pre["perplexity"], post["perplexity"]
    if not math.isfinite(ppl1):
        block["alarm"] = f"edited model's held-out perplexity is {ppl1} (unedited {ppl0:.2f}): the model is broken"
    elif ppl1 > PERPLEXITY_ALARM_RATIO * ppl0:
        block["alarm"] = (
            f"edited model's held-out perplexity rose {ppl1 / ppl0:.1f}x ({ppl0:.2f} -> {ppl1:.2f}): general ability "
            "has collapsed"
        )
    return block
