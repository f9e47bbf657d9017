"""Fluency as ROME/MEMIT measure it: weighted bigram and trigram entropy of generated text.

ROME's `compute_n_gram_entropy` tokenises with `nltk.word_tokenize`, takes the entropy (bits)
of the n-gram frequency distribution for n = 2 and 3, multiplies them by weights 2/3 and 4/3
and averages the two; a case's fluency is the mean over its generations. Repetitive text
(the failure mode of over-edited models) has few distinct n-grams and so low entropy.

nltk is not a dependency here: `word_tokens` splits words, keeping contraction suffixes
("n't", "'s") as their own tokens and each punctuation mark apart, which is what the
Treebank tokenizer does on ordinary generated English.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_TOKEN = re.compile(r"\w+(?=n't\b)|n't\b|'\w+|\w+|[^\w\s]")


def word_tokens(text: str) -> list[str]:
    """Words, contraction suffixes and punctuation marks, in order."""
    return _TOKEN.findall(text)


def ngram_entropy_bits(tokens: Sequence[str], n: int) -> float:
    """Shannon entropy (bits) of the n-gram frequency distribution; 0 when there are no n-grams."""
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def ngram_entropy(
    text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)
) -> float:
    """ROME's weighted n-gram entropy of one text: mean over n of weight_n * H_n."""
    if len(ns) != len(weights) or not ns:
        raise ValueError(f"ns {ns} and weights {weights} must be non-empty and of equal length")
    tokens = word_tokens(text)
    return sum(w * ngram_entropy_bits(tokens, n) for n, w in zip(ns, weights)) / len(ns)


def mean_ngram_entropy(texts: Sequence[str]) -> float:
    """Mean weighted n-gram entropy over texts (a case's fluency)."""
    if not texts:
        raise ValueError("mean_ngram_entropy needs at least one text")
    return sum(ngram_entropy(t) for t in texts) / len(texts)
