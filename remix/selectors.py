"""What a `Switch` routes on: a slot written by an earlier step, or a property of the request."""

from __future__ import annotations

import enum
from dataclasses import fields
from typing import Any, Protocol

from remix.context import Context
from remix.failures import Category
from remix.keys import Key
from remix.request import FeedRequest


class Selector(Protocol):
    """Names the switch case for a request.

    `__call__` returns the case value, or None when the property is absent (the default arm runs).
    `reads` are the slots it reads (validated like a step's reads). `domain` is every value it can return
    when that is known (an enum or bool slot, a bool request field), so a missing case is caught at build
    time; None when open-ended. `responsible` is the failure category of a value with no case: CLIENT
    when the value comes from the request, INTERNAL when our own step wrote it.
    """

    reads: frozenset[Key[Any]]
    domain: frozenset[str] | None
    responsible: Category

    def describe(self) -> str: ...

    def __call__(self, ctx: Context) -> str | None: ...


def _as_case(value: object) -> str:
    """Case value of a property: enum members by value, bools as 'true'/'false', the rest via str()."""
    if isinstance(value, enum.Enum):
        return _as_case(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _domain_of(type_: object) -> frozenset[str] | None:
    if isinstance(type_, type) and issubclass(type_, enum.Enum):
        return frozenset(_as_case(member) for member in type_)
    if type_ is bool:
        return frozenset({"true", "false"})
    return None


class SlotSelector:
    """Routes on the value of `key`, written by an earlier step (e.g. the experiment bucket)."""

    responsible: Category = Category.INTERNAL

    def __init__(self, key: Key[Any]) -> None:
        self.key = key
        self.reads: frozenset[Key[Any]] = frozenset({key})
        self.domain = _domain_of(key.type_)

    def describe(self) -> str:
        return f"slot.{self.key.name}"

    def __call__(self, ctx: Context) -> str | None:
        value = ctx.get(self.key)
        return None if value is None else _as_case(value)


class ContextSelector:
    """Routes on `request.context[name]`; absent means the default arm."""

    responsible: Category = Category.CLIENT
    reads: frozenset[Key[Any]] = frozenset()
    domain: frozenset[str] | None = None

    def __init__(self, name: str) -> None:
        if not name:
            raise ValueError("a request.context selector needs a key name")
        self.name = name

    def describe(self) -> str:
        return f"request.context.{self.name}"

    def __call__(self, ctx: Context) -> str | None:
        return ctx.request.context.get(self.name)


REQUEST_FIELDS: frozenset[str] = frozenset(f.name for f in fields(FeedRequest)) - {
    "context",
    "caller_gone",
    "quality",
    "yield_between_steps",
}
"""Request fields a switch can route on directly (`request.<field>`): what the caller sent, not what the
gateway attaches (its overload quality and scheduling, the caller's cancellation)."""


class RequestSelector:
    """Routes on a field of the request itself (`workflow`, `member_id`, `debug`, ...)."""

    responsible: Category = Category.CLIENT
    reads: frozenset[Key[Any]] = frozenset()

    def __init__(self, field: str) -> None:
        if field not in REQUEST_FIELDS:
            raise ValueError(f"unknown request field {field!r} (known: {', '.join(sorted(REQUEST_FIELDS))})")
        self.field = field
        types = {f.name: f.type for f in fields(FeedRequest)}
        # `from __future__ import annotations` leaves field types as strings.
        self.domain = frozenset({"true", "false"}) if types[field] in (bool, "bool") else None

    def describe(self) -> str:
        return f"request.{self.field}"

    def __call__(self, ctx: Context) -> str | None:
        value = getattr(ctx.request, self.field)
        return None if value is None else _as_case(value)
