"""An adaptive concurrency limit: AIMD over measured latency, bounded by [min_limit, max_limit].

Pure logic (no I/O, no event loop), driven by an injectable clock, so it is tested without sockets.
The limit grows by one per `limit` requests that finish within the latency target while the limit is
in use, and shrinks by `backoff_ratio` when a request finishes late or is dropped (timed out), at most
once per `target_latency_s`: the requests of one congested window report it together and must not
collapse the limit several times over for one event.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from remix.budget import Clock


@dataclass(frozen=True)
class LimitSettings:
    """`max_limit` is the fixed ceiling (the gateway's `max_in_flight`); `initial_limit` is clamped into
    [min_limit, max_limit]. `target_latency_s`: a request slower than this counts as congestion."""

    min_limit: int
    max_limit: int
    initial_limit: int
    target_latency_s: float
    backoff_ratio: float = 0.9

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.max_limit:
            raise ValueError(f"need 1 <= min_limit <= max_limit, got {self.min_limit} and {self.max_limit}")
        if not (math.isfinite(self.target_latency_s) and self.target_latency_s > 0):
            raise ValueError(f"target_latency_s must be positive, got {self.target_latency_s}")
        if not 0 < self.backoff_ratio < 1:
            raise ValueError(f"backoff_ratio must be in (0, 1), got {self.backoff_ratio}")


class AdaptiveLimit:
    """How many requests may run at once, learned from their latency.

    Contract: `try_acquire()` either takes a slot (True) or refuses at once (False), never waits; every
    taken slot is given back exactly once with `release(latency_s, dropped=...)`. `limit` stays within
    [min_limit, max_limit] whatever is reported. Single-threaded use (one event loop): no locks.
    """

    def __init__(self, settings: LimitSettings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._limit = float(min(max(settings.initial_limit, settings.min_limit), settings.max_limit))
        self._in_flight = 0
        self._last_decrease_s = -math.inf

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self) -> bool:
        if self._in_flight >= self.limit:
            return False
        self._in_flight += 1
        return True

    def release(self, latency_s: float | None, *, dropped: bool = False) -> None:
        """Give a slot back. `latency_s` None: no sample (the caller cancelled; its time says nothing
        about the service). `dropped`: the request ran out of time, congestion whatever its latency."""
        if self._in_flight <= 0:
            raise RuntimeError("release() without a matching try_acquire()")
        in_use = self._in_flight
        self._in_flight -= 1
        if latency_s is None and not dropped:
            return
        settings = self.settings
        if dropped or (latency_s is not None and latency_s > settings.target_latency_s):
            now = self._clock()
            if now - self._last_decrease_s >= settings.target_latency_s:
                self._last_decrease_s = now
                self._limit = max(float(settings.min_limit), self._limit * settings.backoff_ratio)
            return
        # Grow only when the limit is what holds requests back: an idle gateway says nothing about more.
        if in_use * 2 >= self.limit:
            self._limit = min(float(settings.max_limit), self._limit + 1.0 / self._limit)
