"""A circuit breaker per route target: stop calling a failing backend, probe it again after a while."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from engines.config import BreakerConfig
from engines.errors import EngineUnavailable


class BreakerState(enum.IntEnum):
    """Values are what the `quasar_engine_breaker_state` gauge reports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpen(EngineUnavailable):
    """The target's breaker is open (or its half-open probes are all taken): the call was not made."""

    reason = "circuit open"


@dataclass(frozen=True)
class Permit:
    """Leave to make one call. Hand it back exactly once: `Breaker.record` or `Breaker.release`."""

    generation: int
    probe: bool


StateListener = Callable[["Breaker", BreakerState], None]
"""Told of every transition, with the breaker that made it."""


class Breaker:
    """Closed → open → half-open → closed, on an injected clock (no timers, no sleeps).

    Closed: every call is let through; `config.consecutive_failures` failures in a row, or a failure
    share of at least `config.failure_rate` over the last `config.window` finished calls (once
    `config.min_calls` of them finished), open it. Open: `acquire` refuses until `config.open_s` has
    passed since it opened, then the breaker turns half-open. Half-open: at most
    `config.half_open_probes` calls are let through (later ones are refused while they run); when all
    of them succeed the breaker closes, the first that fails re-opens it for another `open_s`.

    Outcomes are attributed to the state a call was admitted in: a call let through before the breaker
    changed state (its permit's generation is older) changes nothing when it finishes late. A call that
    ends without a verdict (cancelled) must `release` its permit so a probe slot is not lost.
    Not thread-safe: used from one event loop.
    """

    def __init__(
        self, config: BreakerConfig, clock: Callable[[], float], *, on_change: StateListener | None = None
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._consecutive = 0
        self._recent: deque[bool] = deque(maxlen=config.window)  # True: failed
        self._opened_at = 0.0
        self._probes_out = 0
        self._probes_ok = 0

    @property
    def state(self) -> BreakerState:
        """The state as of now (an open breaker whose `open_s` has passed reads half-open)."""
        self._maybe_half_open()
        return self._state

    def acquire(self) -> Permit | None:
        """A permit for one call, or None when the call must not be made (skip to the fallback)."""
        self._maybe_half_open()
        if self._state is BreakerState.CLOSED:
            return Permit(self._generation, probe=False)
        if self._state is BreakerState.OPEN or self._probes_out + self._probes_ok >= self.config.half_open_probes:
            return None
        self._probes_out += 1
        return Permit(self._generation, probe=True)

    def record(self, permit: Permit, *, ok: bool) -> None:
        """The verdict of a call made under `permit`."""
        if permit.generation != self._generation:
            return
        if permit.probe:
            self._probes_out -= 1
            if not ok:
                self._open()
                return
            self._probes_ok += 1
            if self._probes_ok >= self.config.half_open_probes:
                self._set(BreakerState.CLOSED)
            return
        self._recent.append(not ok)
        self._consecutive = 0 if ok else self._consecutive + 1
        if not ok and self._should_open():
            self._open()

    def release(self, permit: Permit) -> None:
        """Hand back a permit whose call ended without a verdict (cancelled)."""
        if permit.probe and permit.generation == self._generation:
            self._probes_out -= 1

    def _should_open(self) -> bool:
        if self._consecutive >= self.config.consecutive_failures:
            return True
        rate = self.config.failure_rate
        if rate is None or len(self._recent) < self.config.min_calls:
            return False
        return sum(self._recent) >= rate * len(self._recent)

    def _maybe_half_open(self) -> None:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.config.open_s:
            self._set(BreakerState.HALF_OPEN)

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        # Every transition starts a new generation with fresh counters.
        self._state = state
        self._generation += 1
        self._consecutive = 0
        self._recent.clear()
        self._probes_out = 0
        self._probes_ok = 0
        if self._on_change is not None:
            self._on_change(self, state)
