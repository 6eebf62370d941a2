"""The per-request context every step reads from and writes to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from remix.budget import Budget
from remix.failures import Failure
from remix.keys import Key
from remix.request import FeedRequest
from remix.trace import Trace

T = TypeVar("T")


@dataclass(frozen=True)
class ModelUse:
    """A model call the request depended on (reported as model versions; replayable later)."""

    model: str
    target: str
    version: str


@dataclass
class Context:
    """State of one request. Created by the executor; never shared between requests.

    Slots are written once per key by the step that declares it; `failures` collects what fail-open
    steps left behind, and makes the answer `degraded`. `table_versions` and `models` record every
    external read, so a request can be captured and replayed.
    """

    request: FeedRequest
    budget: Budget
    trace: Trace = field(default_factory=Trace)
    failures: list[Failure] = field(default_factory=list)
    table_versions: dict[str, str] = field(default_factory=dict)
    models: list[ModelUse] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    """Step name -> what it wants in its trace entry's detail when it succeeds (e.g. counts of what it dropped)."""
    _slots: dict[str, Any] = field(default_factory=dict)

    def with_budget(self, budget: Budget) -> Context:
        """A view of this request under a narrower budget (a step's own timeout).

        Everything else is shared with this context (slots, trace, failures, recorded reads), so what a
        step writes through the view is seen by every later step.
        """
        # A shallow copy of the fields, not dataclasses.replace: that re-runs __init__ and field defaults,
        # ~5x the cost, once per guarded step of every request.
        view = object.__new__(Context)
        view.__dict__.update(self.__dict__)
        view.budget = budget
        return view

    def set(self, key: Key[T], value: T) -> None:
        self._slots[key.name] = value

    def get(self, key: Key[T]) -> T:
        try:
            return self._slots[key.name]  # type: ignore[no-any-return]
        except KeyError:
            raise KeyError(f"slot {key.name!r} was never written in this request") from None

    def get_or(self, key: Key[T], default: T) -> T:
        return self._slots.get(key.name, default)  # type: ignore[no-any-return]

    def has(self, key: Key[Any]) -> bool:
        return key.name in self._slots

    @property
    def degraded(self) -> bool:
        return bool(self.failures)

    def degrade(self, failure: Failure) -> None:
        self.failures.append(failure)
