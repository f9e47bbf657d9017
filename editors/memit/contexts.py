"""Context prefixes: short texts the model itself writes, put before edit prompts.

Keys and target values are averaged over the bare prompt and these prefixed versions so
the edit holds for the subject in varied contexts, not just at the start of a text
(MEMIT's context templates). The prefixes are sampled from the model being edited with a
seeded generator (top-k), using a plain token-by-token loop without a KV cache: the
`generate()` API has changed arguments between transformers versions, and a silently
ignored argument produced junk templates in the reference code.
"""

from __future__ import annotations

import torch

from kebench.models.loaded import LoadedModel
from kebench.scoring import encode_prompt

STARTS = ("The", "Therefore", "Because", "I", "You")


@torch.no_grad()
def sample_text(lm: LoadedModel, start: str, n_tokens: int, generator: torch.Generator, top_k: int = 5) -> str:
    """`start` continued by `n_tokens` tokens sampled from the model's top-k."""
    ids = encode_prompt(lm.tokenizer, start)
    stop = {lm.tokenizer.eos_token_id} - {None}
    for _ in range(n_tokens):
        x = torch.tensor([ids], device=lm.device)
        logits = lm.model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).logits[0, -1].float().cpu()
        top = torch.topk(logits, top_k)
        token = int(top.indices[torch.multinomial(torch.softmax(top.values, -1), 1, generator=generator)])
        if token in stop:
            break
        ids.append(token)
    return lm.tokenizer.decode(ids, skip_special_tokens=True)


def clean_prefix(text: str) -> str:
    """One line, no format braces, ending in '. ' so the prompt starts a new sentence."""
    text = " ".join(text.replace("{", " ").replace("}", " ").split())
    return text + ". "


def context_prefixes(lm: LoadedModel, n: int, n_tokens: int = 10, seed: int = 0) -> list[str]:
    """"" (the bare prompt) followed by `n` model-written prefixes, deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed)
    starts = [STARTS[i % len(STARTS)] for i in range(n)]
    return [""] + [clean_prefix(sample_text(lm, s, n_tokens, generator)) for s in starts]
