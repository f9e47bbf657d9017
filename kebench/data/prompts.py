"""Building `EditRequest` prompts: the subject slot "{}" and question templates.

Locate-then-edit methods (ROME, MEMIT, AlphaEdit) read the key at the subject's
last token, so the request prompt must say where the subject is.
"""

from __future__ import annotations

from kebench.data.fields import Fields
from kebench.errors import ConfigError


def place_subject(text: str, subject: str) -> tuple[str, str] | None:
    """Replace the subject's LAST occurrence in `text` with "{}".

    Returns (prompt with "{}", the subject as spelled in `text`) so that
    prompt.replace("{}", subject) == text; the match is case-sensitive first,
    then case-insensitive. None if the subject does not occur.
    """
    if not subject:
        return None
    at = text.rfind(subject)
    if at < 0:
        at = text.lower().rfind(subject.lower())
        # lower() can change lengths for a few non-ASCII letters; only trust equal-length spans
        if at < 0 or text[at : at + len(subject)].lower() != subject.lower():
            return None
    found = text[at : at + len(subject)]
    return text[:at] + "{}" + text[at + len(subject) :], found


def check_template(template: str) -> str:
    """A question template must hold exactly one "{}" where the question goes."""
    if template.count("{}") != 1:
        raise ConfigError(f"question template {template!r} must contain '{{}}' exactly once (where the question goes)")
    return template


def apply_template(template: str, question: str) -> str:
    """Wrap a question; str.replace rather than str.format so braces in questions are safe."""
    return template.replace("{}", question)


def subject_slot(f: Fields, path: str, text: str, subject: str) -> tuple[str, str] | None:
    """`place_subject` for a record's field, refusing texts that already hold a literal "{}"."""
    if "{}" in text:
        raise f.error(f"has a literal '{{}}' in {f.prefix + path!r}, which would be taken for the subject slot")
    return place_subject(text, subject)
