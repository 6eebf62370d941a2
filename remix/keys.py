"""Typed slots for data flowing between steps.

Each step declares the keys it reads and writes, so a workflow is validated when it is built (missing
producer, two producers) rather than at request time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Key(Generic[T]):
    """A named, typed slot in a request `Context`. Equality is by name."""

    name: str
    type_: type[Any]

    def __repr__(self) -> str:
        return f"Key({self.name!r})"
