"""A workflow: a named, versioned, validated tree of steps. A value, built once at startup."""

from __future__ import annotations

import math
from dataclasses import dataclass

from remix.graph import validate
from remix.step import Step
from remix.tables import bind_tables
from remix.wrappers import guard


@dataclass(frozen=True)
class Workflow:
    """`root` runs a request; usually a `Sequence` named after the workflow.

    Construction guards the root (fail closed, no own timeout) and validates the whole tree
    (`remix.graph`), raising `WorkflowBuildError`: a Workflow that exists is well formed.
    `default_timeout_s` is the request budget when the caller sets none; when both are set the shorter
    one wins. None means no default (a request without a deadline runs unbounded).
    """

    name: str
    version: str
    root: Step
    default_timeout_s: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a workflow needs a name")
        timeout_s = self.default_timeout_s
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"workflow {self.name!r}: default_timeout_s must be positive or None, got {timeout_s!r}")
        # Frozen: assigning through object.__setattr__ is how a frozen dataclass normalises a field.
        object.__setattr__(self, "root", guard(self.root))
        validate(self.root)
        bind_tables(self.root)
