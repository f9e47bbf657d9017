"""Answer normalisation and the three string-match rules papers use for generated answers.

- exact match: the normalised first line equals a normalised answer (ZsRE EM, MeG).
- prefix match: the normalised first line starts with a normalised answer (the lenient
  `startswith` of MEMIT-style generation checks).
- contains match: a normalised answer occurs as whole words in the normalised first line
  (MQuAKE, where models often answer in a sentence).
Only the first line counts so that a model rambling on cannot hit the answer by chance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kebench.errors import DataError

_SPACES = re.compile(r"\s+")


def first_line(text: str) -> str:
    """The text up to its first newline, ignoring newlines before any content.

    A continuation that opens with a line break ("\\nParis") is still answering; cutting
    there would score it empty.
    """
    return text.lstrip().split("\n", 1)[0]


def normalise_answer(text: str) -> str:
    """First line, stripped, trailing '.' dropped, lower-cased, whitespace collapsed."""
    line = first_line(text).strip().rstrip(".").strip()
    return _SPACES.sub(" ", line.lower())


def _answers(answers: str | Sequence[str]) -> list[str]:
    items = [answers] if isinstance(answers, str) else list(answers)
    normalised = [normalise_answer(a) for a in items]
    if not normalised or not all(normalised):
        raise DataError(f"answers {items!r} contain an empty answer: every probe needs non-empty answers")
    return normalised


def exact_match(generation: str, answers: str | Sequence[str]) -> bool:
    """Normalised generation equals any normalised answer (canonical or alias)."""
    got = normalise_answer(generation)
    return any(got == a for a in _answers(answers))


def prefix_match(generation: str, answers: str | Sequence[str]) -> bool:
    """Normalised generation starts with any normalised answer (lenient; no word boundary)."""
    got = normalise_answer(generation)
    return any(got.startswith(a) for a in _answers(answers))


def contains_match(generation: str, answers: str | Sequence[str]) -> bool:
    """Some normalised answer occurs as whole words in the normalised generation."""
    got = normalise_answer(generation)
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", got) for a in _answers(answers))


def same_answer(generation_a: str, generation_b: str) -> bool:
    """Two generations give the same answer after normalisation (locality vs the unedited model)."""
    return normalise_answer(generation_a) == normalise_answer(generation_b)
