"""A name -> object registry with did-you-mean errors (after lm-evaluation-harness's Registry)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from typing import Generic, TypeVar

from kebench.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects, registered in code (`register`) or arriving through an entry-point group
    (installed packages' metadata, kebench's own included), imported only when asked for by name."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False
        self._lazy: dict[str, EntryPoint] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name`; usable as a decorator when `obj` is omitted."""

        def add(o: T) -> T:
            if name in self._items and self._items[name] is not o:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.entry_point_group is None:
            return
        self._entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_point_group):
            self._lazy.setdefault(ep.name, ep)

    def get(self, name: str) -> T:
        self._load_entry_points()
        if name not in self._items and name in self._lazy:
            loaded = self._lazy.pop(name).load()
            self._items.setdefault(name, loaded)  # the module may have registered itself on import
        if name not in self._items:
            known = self.names()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if not known and self.entry_point_group:
                hint = (f"; none is installed: the {self.entry_point_group!r} entry points come with the package "
                        "(in a checkout, run `pip install -e .` again)")
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(known)})")
        return self._items[name]

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(set(self._items) | set(self._lazy))

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
