"""The domain form of a feed request, independent of any wire format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FeedRequest:
    """A validated request. The gateway builds it from the wire message after its own checks."""

    request_id: str
    member_id: int
    count: int
    workflow: str = "feed"
    context: Mapping[str, str] = field(default_factory=dict)
    debug: bool = False
