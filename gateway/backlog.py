"""The bound on calls grpc holds before the gateway takes them (the queue admission cannot see).

grpc.aio takes one call from grpc core at a time, a few event-loop turns apart, and every turn also runs
a slice of each admitted request: under a burst, calls are taken at about the rate they complete, so they
wait in core's pending list, not in front of admission (measured: a 3,000-call burst on one channel never
put more than ~6 calls in the handler). Only core can shed that queue at line rate. It does so through
its pending-request limits: below `soft` every call waits; between `soft` and `hard` a growing share of
new calls is refused; at `hard` all are. Refused calls end at once, with no handler run, and the caller
sees CANCELLED (grpc's choice of status, not the gateway's).
"""

from __future__ import annotations

PENDING_SOFT_LIMIT = "grpc.server.max_pending_requests"
PENDING_HARD_LIMIT = "grpc.server.max_pending_requests_hard_limit"


def backlog_options(max_pending_calls: int) -> list[tuple[str, int]]:
    """Server channel options that bound core's pending list: soft `max_pending_calls`, hard twice that."""
    if max_pending_calls < 1:
        raise ValueError(f"max_pending_calls must be at least 1, got {max_pending_calls}")
    return [(PENDING_SOFT_LIMIT, max_pending_calls), (PENDING_HARD_LIMIT, 2 * max_pending_calls)]
