"""Answer normalisation and the string-match rules papers use for generated answers.

Only the first line of a generation counts (`first_line`), so that a model rambling on cannot
hit the answer by chance. Two normalisations:

- `squad_normalise`: SQuAD v1.1's `normalize_answer` (lower-case, ASCII punctuation removed,
  articles a/an/the removed, whitespace collapsed). ZsRE's generation metrics use it:
  - `exact_match`: the normalised first line equals a normalised answer;
  - `span_match`: a normalised answer occurs as a contiguous run of whole tokens in the
    normalised first line ("answer span contained": "It is Paris." states "Paris");
  - `same_answer`: two generations' normalised first lines are equal (locality vs the
    unedited model).
- `normalise_answer`: MeG's rule (first line, trailing "." dropped, lower-cased, whitespace
  collapsed), kept for MQuAKE's `contains_match`, whose numbers were recorded with it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from kebench.errors import DataError

_SPACES = re.compile(r"\s+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def first_line(text: str) -> str:
    """The text up to its first newline, ignoring newlines before any content.

    A continuation that opens with a line break ("\\nParis") is still answering; cutting
    there would score it empty.
    """
    return text.lstrip().split("\n", 1)[0]


def squad_normalise(text: str, articles: bool = True) -> str:
    """SQuAD v1.1's answer normalisation: lower-case, drop punctuation, drop a/an/the, collapse spaces.

    `articles=False` keeps the articles (for answers that are nothing but one, such as "A").
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join((_ARTICLES.sub(" ", text) if articles else text).split())


def _squad_answers(answers: str | Sequence[str]) -> list[tuple[str, bool]]:
    """(normalised answer, whether articles were dropped) per reference answer.

    An answer that is only an article ("A", the blood group) keeps it, and the generation it is
    compared with is then normalised the same way. Reference answers must be non-empty.
    """
    items = [answers] if isinstance(answers, str) else list(answers)
    out = []
    for a in items:
        norm, articles = squad_normalise(a), True
        if not norm:
            norm, articles = squad_normalise(a, articles=False), False
        if not norm:
            raise DataError(f"answers {items!r} contain an empty answer: every probe needs non-empty answers")
        out.append((norm, articles))
    if not out:
        raise DataError("a probe has no answers: every probe needs at least one non-empty answer")
    return out


def answer_text(generation: str, articles: bool = True) -> str:
    """The generation's answer as the ZsRE metrics compare it: its first line, SQuAD-normalised."""
    return squad_normalise(first_line(generation), articles)


def exact_match(generation: str, answers: str | Sequence[str]) -> bool:
    """The normalised first line equals some normalised answer (canonical or alias)."""
    return any(answer_text(generation, articles) == a for a, articles in _squad_answers(answers))


def span_match(generation: str, answers: str | Sequence[str]) -> bool:
    """Some normalised answer occurs as whole consecutive tokens of the normalised first line."""
    for answer, articles in _squad_answers(answers):
        got, want = answer_text(generation, articles).split(), answer.split()
        if any(got[i : i + len(want)] == want for i in range(len(got) - len(want) + 1)):
            return True
    return False


def same_answer(generation_a: str, generation_b: str) -> bool:
    """Two generations state the same answer: equal normalised first lines (locality vs the unedited model)."""
    return answer_text(generation_a) == answer_text(generation_b)


def normalise_answer(text: str) -> str:
    """MeG's rule: first line, stripped, trailing '.' dropped, lower-cased, whitespace collapsed."""
    line = first_line(text).strip().rstrip(".").strip()
    return _SPACES.sub(" ", line.lower())


def _answers(answers: str | Sequence[str]) -> list[str]:
    items = [answers] if isinstance(answers, str) else list(answers)
    normalised = [normalise_answer(a) for a in items]
    if not normalised or not all(normalised):
        raise DataError(f"answers {items!r} contain an empty answer: every probe needs non-empty answers")
    return normalised


def contains_match(generation: str, answers: str | Sequence[str]) -> bool:
    """Some answer (MeG-normalised) occurs as whole words in the generation's first line (MQuAKE)."""
    got = normalise_answer(generation)
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", got) for a in _answers(answers))
