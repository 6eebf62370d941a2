"""The domain form of a feed request, independent of any wire format."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


def _never() -> bool:
    return False


@dataclass(frozen=True)
class FeedRequest:
    """A validated request. The gateway builds it from the wire message after its own checks.

    `quality` is how wide the second pass may run, in (0, 1]: 1.0 is the workflow as declared; the gateway
    lowers it under overload and `merge` caps `max_candidates` by it (marking the answer degraded).
    `caller_gone` answers True once nobody waits for the answer (the caller cancelled); every step checks
    it before starting, so no work is done for a caller that left. It is not part of the request's value.
    `yield_between_steps`: a sequence gives the event loop a turn after each step, so other work waiting
    on the loop (a server taking and refusing new calls) runs between this request's steps instead of after
    its end. A gateway that runs one call at a time sets it (`overload_max_active_calls`); where requests
    share the loop it would only spread each one's latency over the others'.
    """

    request_id: str
    member_id: int
    count: int
    workflow: str = "feed"
    context: Mapping[str, str] = field(default_factory=dict)
    debug: bool = False
    quality: float = 1.0
    yield_between_steps: bool = False
    caller_gone: Callable[[], bool] = field(default=_never, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.quality <= 1.0:
            raise ValueError(f"quality must be in (0, 1], got {self.quality}")
