"""Request time budget: one deadline per request, every step's limit derived from it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]
"""Monotonic clock in seconds; injectable so tests control time."""


@dataclass(frozen=True)
class Budget:
    """A deadline on a monotonic clock.

    `deadline_s` is an absolute reading of `clock`; `None` means the request has no deadline of its own.
    """

    deadline_s: float | None
    clock: Clock = field(default=time.monotonic, compare=False, repr=False)

    @classmethod
    def from_timeout(cls, timeout_s: float | None, clock: Clock = time.monotonic) -> Budget:
        return cls(None if timeout_s is None else clock() + timeout_s, clock)

    def remaining_s(self) -> float | None:
        """Seconds left (never negative), or None when unbounded."""
        if self.deadline_s is None:
            return None
        return max(0.0, self.deadline_s - self.clock())

    def expired(self) -> bool:
        remaining = self.remaining_s()
        return remaining is not None and remaining <= 0.0

    def child_timeout_s(self, step_timeout_s: float | None) -> float | None:
        """The limit a step runs under: min(step_timeout_s, remaining_s); None when both are unbounded."""
        remaining = self.remaining_s()
        if step_timeout_s is None:
            return remaining
        if remaining is None:
            return step_timeout_s
        return min(step_timeout_s, remaining)

    def child(self, step_timeout_s: float | None) -> Budget:
        """A budget ending at the earlier of this deadline and now + step_timeout_s."""
        timeout_s = self.child_timeout_s(step_timeout_s)
        return Budget.from_timeout(timeout_s, self.clock)
