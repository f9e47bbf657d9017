"""The one record type every suite is loaded into, and the edit request editors consume."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Probe:
    """A prompt and the answers that count as correct (first is canonical, the rest aliases)."""

    prompt: str
    answers: tuple[str, ...]

    @property
    def answer(self) -> str:
        return self.answers[0]


@dataclass(frozen=True)
class EditRequest:
    """One requested rewrite: `prompt` holds "{}" where the subject goes (as in ROME/MEMIT).

    Editors see only requests, never the evaluation prompts of a case, so nothing
    from the test side (paraphrases, neighbourhood) leaks into fitting.
    """

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None
    case_id: str = ""

    def __post_init__(self) -> None:
        if "{}" not in self.prompt:
            raise ValueError(f"EditRequest.prompt must contain '{{}}' for the subject: {self.prompt!r}")

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return self.prompt.replace("{}", self.subject)

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity of the edit (MQuAKE cases share edits; editors apply each once)."""
        return (self.prompt, self.subject, self.target_new)


@dataclass(frozen=True)
class EditCase:
    """One benchmark case: the rewrites to apply and the probes that test them.

    - `requests`: usually one; MQuAKE cases carry several.
    - `paraphrases`: prompts that should now yield `target_new` (generality).
    - `neighbourhood`: prompts about other subjects whose answers must not change (locality/specificity).
    - `portability`: multi-hop / portability questions whose answers follow from the edit.
    - `generation_prompts`: open prompts for fluency (CounterFact ROME format).
    - `extra`: suite-specific fields (e.g. MQuAKE's original answers and single hops).
    """

    case_id: str
    suite: str
    requests: tuple[EditRequest, ...]
    paraphrases: tuple[str, ...] = ()
    neighbourhood: tuple[Probe, ...] = ()
    portability: tuple[Probe, ...] = ()
    generation_prompts: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def request(self) -> EditRequest:
        return self.requests[0]

    @property
    def subject(self) -> str:
        return self.requests[0].subject

    @property
    def prompt(self) -> str:
        return self.requests[0].text

    @property
    def target_new(self) -> str:
        return self.requests[0].target_new

    @property
    def target_true(self) -> str | None:
        return self.requests[0].target_true


def unique_requests(requests: Iterable[EditRequest]) -> list[EditRequest]:
    """Each distinct rewrite once, in first-seen order (MQuAKE cases share rewrites)."""
    seen: dict[tuple[str, str, str], EditRequest] = {}
    for request in requests:
        seen.setdefault(request.key, request)
    return list(seen.values())
