"""The per-request context every step reads from and writes to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np

from remix import spans
from remix.budget import Budget
from remix.failures import Failure
from remix.keys import Key
from remix.request import FeedRequest
from remix.trace import Trace

T = TypeVar("T")


_EMPTY: Mapping[str, str] = MappingProxyType({})
_NO_RELEASES: Mapping[str, tuple[str, str]] = MappingProxyType({})
_NO_TENSORS: Mapping[str, np.ndarray] = MappingProxyType({})


@dataclass(frozen=True)
class Serving:
    """What serves one request, fixed when it starts, so no answer mixes two releases.

    `model_releases`: logical model -> (release, arm) for the models a release serves (arm: `stable`,
    `canary`); `release` and `arm` summarise them (comma-joined when several release lines serve, empty
    when none does). `table_pins`: table -> the version this request reads (they win over the store's
    current versions). `model_routes`: logical model -> the route that serves it for this request (a
    release installs its routes under their own names); a model not listed is served by the route of its
    own name.
    """

    release: str = ""
    arm: str = ""
    table_pins: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    model_routes: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    model_releases: Mapping[str, tuple[str, str]] = field(default_factory=lambda: _NO_RELEASES)

    def route(self, model: str) -> str:
        return self.model_routes.get(model, model)

    def release_of(self, model: str) -> str:
        """The release serving `model` for this request ("" when none does)."""
        found = self.model_releases.get(model)
        return "" if found is None else found[0]

    def attribution(self, models: Iterable[str]) -> tuple[str, str]:
        """(releases, arms) of the releases that served these models (the ones a request called),
        comma-joined and sorted; ("", "") when no release served any of them."""
        used = sorted({self.model_releases[m] for m in models if m in self.model_releases})
        return ",".join(r for r, _ in used), ",".join(a for _, a in used)


NO_RELEASE = Serving()


@dataclass(frozen=True, eq=False)  # identity: it holds arrays, whose == is elementwise
class ModelUse:
    """A model call the request depended on: reported as model versions, watched by health tracking,
    captured for replay. `route` is the route that served it (see `Serving.model_routes`); `rows` the
    candidate ids of the input rows; `inputs`/`outputs` the tensors as sent and received (references,
    never copied: nothing mutates them after the call)."""

    model: str
    target: str
    version: str
    route: str = ""
    rows: np.ndarray | None = None
    inputs: Mapping[str, np.ndarray] = field(default_factory=lambda: _NO_TENSORS, repr=False)
    outputs: Mapping[str, np.ndarray] = field(default_factory=lambda: _NO_TENSORS, repr=False)


@dataclass
class Context:
    """State of one request. Created by the executor; never shared between requests.

    Slots are written once per key by the step that declares it; `failures` collects what fail-open
    steps left behind, and makes the answer `degraded`. `table_versions` and `models` record every
    external read, so a request can be captured and replayed.
    """

    request: FeedRequest
    budget: Budget
    serving: Serving = NO_RELEASE
    trace: Trace = field(default_factory=Trace)
    failures: list[Failure] = field(default_factory=list)
    table_versions: dict[str, str] = field(default_factory=dict)
    models: list[ModelUse] = field(default_factory=list)
    failed_routes: set[str] = field(default_factory=set)
    """Routes whose model this request could not use as asked: the call failed, a fallback target answered
    instead, or the step rejected the outputs. Recorded where the call is made, so a release's warm-up
    knows whether its own route failed rather than guessing from failure messages."""
    notes: dict[str, str] = field(default_factory=dict)
    """Step name -> what it wants in its trace entry's detail when it succeeds (e.g. counts of what it dropped)."""
    tracing: bool = field(default_factory=spans.recording)
    """Whether this request opens OpenTelemetry spans: asked once, when the request begins (see `remix.spans`)."""
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
