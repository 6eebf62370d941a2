"""What a feed frontend asks a Quasar gateway for: the request mix of the load test, without Locust.

Kept apart from the locustfile so the traffic shape can be tested in a plain process (importing Locust
monkey-patches the standard library with gevent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_MEMBERS = 10_000


@dataclass(frozen=True)
class TrafficShape:
    """Parameters of the request mix. `counts` and `count_weights` pair up; times are seconds."""

    members: int = DEFAULT_MEMBERS
    zipf_s: float = 1.1
    counts: tuple[int, ...] = (10, 20, 50, 100)
    count_weights: tuple[float, ...] = (0.15, 0.35, 0.4, 0.1)
    debug_share: float = 0.02
    deadline_s: float = 1.0
    think_min_s: float = 0.05
    think_max_s: float = 0.25
    seed: int = 1

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")
        if self.zipf_s <= 0:
            raise ValueError(f"zipf_s must be > 0, got {self.zipf_s}")
        if not self.counts or len(self.counts) != len(self.count_weights):
            raise ValueError(f"counts {self.counts} and count_weights {self.count_weights} must pair up")
        if any(count < 1 for count in self.counts):
            raise ValueError(f"counts must be >= 1, got {self.counts}")
        if any(weight < 0 for weight in self.count_weights) or sum(self.count_weights) <= 0:
            raise ValueError(f"count_weights must be >= 0 with a positive sum, got {self.count_weights}")
        if not 0.0 <= self.debug_share <= 1.0:
            raise ValueError(f"debug_share must be within [0, 1], got {self.debug_share}")
        if self.deadline_s <= 0:
            raise ValueError(f"deadline_s must be > 0, got {self.deadline_s}")
        if not 0.0 <= self.think_min_s <= self.think_max_s:
            raise ValueError(f"need 0 <= think_min_s <= think_max_s, got {self.think_min_s}, {self.think_max_s}")


@dataclass(frozen=True)
class FeedCall:
    member_id: int
    count: int
    debug: bool

    @property
    def name(self) -> str:
        """The name the call is reported under: one row per page size, debug calls apart."""
        return "GetFeed debug" if self.debug else f"GetFeed count={self.count}"


class FeedTraffic:
    """Draws calls: member ids from a Zipf law over 1..members (rank r has weight r^-s; ranks map to ids
    through a fixed permutation, so hot members are spread over the id range), page sizes by weight, and a
    `debug_share` of debug calls. `stream(i)` gives user i its own reproducible random stream."""

    def __init__(self, shape: TrafficShape) -> None:
        self.shape = shape
        ranks = np.arange(1, shape.members + 1, dtype=np.float64)
        cdf = np.cumsum(ranks**-shape.zipf_s)
        self._member_cdf = cdf / cdf[-1]
        self._member_by_rank = np.random.default_rng(shape.seed).permutation(shape.members).astype(np.int64) + 1
        weights = np.asarray(shape.count_weights, dtype=np.float64)
        self._count_cdf = np.cumsum(weights / weights.sum())

    def stream(self, user: int) -> np.random.Generator:
        return np.random.default_rng([self.shape.seed, user])

    def member_by_rank(self, rank: int) -> int:
        """The member id of activity rank `rank` (0 = the most active)."""
        return int(self._member_by_rank[rank])

    def next_call(self, rng: np.random.Generator) -> FeedCall:
        rank = min(int(np.searchsorted(self._member_cdf, rng.random(), side="right")), self.shape.members - 1)
        index = min(int(np.searchsorted(self._count_cdf, rng.random(), side="right")), len(self.shape.counts) - 1)
        debug = bool(rng.random() < self.shape.debug_share)
        return FeedCall(member_id=self.member_by_rank(rank), count=self.shape.counts[index], debug=debug)

    def think_s(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.shape.think_min_s, self.shape.think_max_s))


def members_in_world(world: Path) -> int | None:
    """The member count a built world declares (world.json), or None when there is no world there."""
    manifest = world / "world.json"
    if not manifest.is_file():
        return None
    return int(json.loads(manifest.read_text())["members"])
