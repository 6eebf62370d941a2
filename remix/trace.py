"""Per-request record of what every step did and how long it took."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Outcome(enum.Enum):
    OK = "ok"
    FAILED_OPEN = "failed_open"  # failed, the workflow went on without its output
    TIMED_OUT = "timed_out"
    FELL_BACK = "fell_back"  # the primary failed and its fallback answered
    CANCELLED = "cancelled"
    FAILED = "failed"  # failed closed: the request fails
    SKIPPED = "skipped"  # not run (e.g. a switch branch not taken)


@dataclass(frozen=True)
class TraceEntry:
    name: str
    outcome: Outcome
    elapsed_ms: float
    budget_left_ms: float | None
    detail: str = ""


@dataclass
class Trace:
    """Append-only list of step records, in completion order. Not shared across requests."""

    entries: list[TraceEntry] = field(default_factory=list)

    def record(self, entry: TraceEntry) -> None:
        self.entries.append(entry)

    def by_name(self, name: str) -> TraceEntry:
        for entry in reversed(self.entries):
            if entry.name == name:
                return entry
        raise KeyError(name)
