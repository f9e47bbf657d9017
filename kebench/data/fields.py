"""Checked access to the fields of one raw record, so every loader reports bad data the same way.

A message names the file, the record index and the field, and what format was
expected, e.g. "counterfact-edit.json: record 17 lacks 'target_new'; expected
CounterFact EasyEdit format (case_id, prompt, subject, target_new, ...)".
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from kebench.errors import DataError

_MISSING = object()


class Fields:
    """One record of a file, read through dotted paths ("requested_rewrite.target_new.str")."""

    def __init__(self, record: dict[str, Any], index: int, source: str, expected: str, prefix: str = "") -> None:
        self.record = record
        self.index = index
        self.source = source
        self.expected = expected
        self.prefix = prefix  # where a nested object sits in the record, e.g. "requested_rewrite[2]."

    @property
    def record_id(self) -> str:
        """An id for records that carry none: "<file stem>:<index>", stable across runs."""
        stem = PurePath(self.source).name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
        return f"{stem}:{self.index}"

    def error(self, problem: str) -> DataError:
        return DataError(f"{self.source}: record {self.index} {problem}; expected {self.expected}")

    def has(self, path: str) -> bool:
        return self._lookup(path) is not _MISSING

    def raw(self, path: str) -> Any:
        value = self._lookup(path)
        if value is _MISSING:
            raise self.error(f"lacks {self.prefix + path!r}")
        return value

    def text(self, path: str, *, what: str = "") -> str:
        """A non-empty string, stripped (targets are scored with a leading space of their own)."""
        value = self.raw(path)
        if not isinstance(value, str):
            raise self.error(f"has {self.prefix + path!r} of type {type(value).__name__}, not a string")
        value = value.strip()
        if not value:
            raise self._empty(path, what)
        return value

    def texts(self, path: str, *, what: str = "", required: bool = True) -> tuple[str, ...]:
        """A string or a (possibly nested) list of strings, as a tuple of stripped non-empty strings.

        Required fields must yield at least one string; optional ones give () when absent or empty.
        """
        if not required and not self.has(path):
            return ()
        value = self.raw(path)
        out: list[str] = []
        self._flatten(value, path, out)
        if not out and required:
            raise self._empty(path, what)
        return tuple(out)

    def mapping(self, path: str) -> dict[str, Any]:
        value = self.raw(path)
        if not isinstance(value, dict):
            raise self.error(f"has {self.prefix + path!r} of type {type(value).__name__}, not an object")
        return value

    def items(self, path: str) -> list[Any]:
        value = self.raw(path)
        if not isinstance(value, list):
            raise self.error(f"has {self.prefix + path!r} of type {type(value).__name__}, not a list")
        return value

    def sub(self, path: str, value: Any) -> Fields:
        """Fields of a nested object, whose messages name it by `path` (e.g. "requested_rewrite[2]")."""
        if not isinstance(value, dict):
            raise self.error(f"has {self.prefix + path!r} of type {type(value).__name__}, not an object")
        return Fields(value, self.index, self.source, self.expected, prefix=f"{self.prefix}{path}.")

    def _empty(self, path: str, what: str) -> DataError:
        label = f" ({what})" if what else ""
        return self.error(f"has an empty {self.prefix + path!r}{label}; fill it in or remove the record")

    def _flatten(self, value: Any, path: str, out: list[str]) -> None:
        if isinstance(value, str):
            if value.strip():
                out.append(value.strip())
        elif isinstance(value, list):
            for item in value:
                self._flatten(item, path, out)
        else:
            raise self.error(f"has {self.prefix + path!r} holding a {type(value).__name__}, not strings")

    def _lookup(self, path: str) -> Any:
        value: Any = self.record
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value or value[part] is None:
                return _MISSING
            value = value[part]
        return value

