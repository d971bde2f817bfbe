"""``Registry``: name -> entry, the one pattern behind ``edge_pace.backbones.BACKBONES`` and
``edge_pace.evaluation.baselines.METHODS``: an entry is added once under its ``name``, and an unknown name is
an error that lists the choices. Imports nothing."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """A dict of named entries (insertion order = listing order) of one ``kind`` ("backbone", "method")."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, entry: T) -> T:
        """Add ``entry`` under ``entry.name``; a name can be registered once."""
        name = entry.name  # type: ignore[attr-defined]
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = entry
        return entry

    def lookup(self, name: str) -> T:
        """The entry named ``name``; ValueError naming the choices for an unknown name."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(self)}")
        return self[name]


__all__ = ["Registry"]
