"""How a step is run: its own timeout, whether its failure fails the request, and what replaces it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from remix.step import Step


@dataclass(frozen=True)
class Policy:
    """A step's run policy, applied once at build time by `remix.wrappers.guard`.

    `timeout_s`: the step's own limit; it runs under min(timeout_s, the enclosing budget's remaining_s).
    None means no limit of its own (the request deadline still applies).

    `fail_open`: when the step fails (error or timeout), the workflow goes on without its writes and the
    answer is marked degraded. False (the default) is fail closed: the failure fails the enclosing step
    and, unless something above fails open, the request.

    `fallback`: run when the step fails, with whatever budget the enclosing scope has left (the step's
    own timeout does not apply to it). An answer from a fallback is a degraded answer. When the fallback
    fails too, `fail_open` decides.
    """

    timeout_s: float | None = None
    fail_open: bool = False
    fallback: Step | None = None

    def __post_init__(self) -> None:
        if self.timeout_s is not None and not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds or None, got {self.timeout_s!r}")

    @property
    def is_default(self) -> bool:
        """True when the policy adds nothing: no own timeout, fail closed, no fallback."""
        return self.timeout_s is None and not self.fail_open and self.fallback is None
