"""The quality factor: how wide the second pass runs, narrowed while recent latency is above its target.

It is the first step of degradation, before the concurrency limit rejects anything: its target sits
below the limit's. Pure logic over an exponentially weighted mean of request latencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FULL_QUALITY = 1.0


@dataclass(frozen=True)
class QualitySettings:
    """`target_latency_s`: above it (smoothed), requests get `narrowed_quality`; they get full quality
    again once the smoothed latency is back under `recover_ratio` * target (hysteresis, so the factor does
    not flap around the target). `smoothing`: weight of each new sample in the mean."""

    target_latency_s: float
    narrowed_quality: float = 0.5
    recover_ratio: float = 0.8
    smoothing: float = 0.1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_latency_s) and self.target_latency_s > 0):
            raise ValueError(f"target_latency_s must be positive, got {self.target_latency_s}")
        if not 0 < self.narrowed_quality <= 1:
            raise ValueError(f"narrowed_quality must be in (0, 1], got {self.narrowed_quality}")
        if not 0 < self.recover_ratio <= 1:
            raise ValueError(f"recover_ratio must be in (0, 1], got {self.recover_ratio}")
        if not 0 < self.smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {self.smoothing}")


class QualityGovernor:
    """`quality` is FULL_QUALITY (1.0) or `narrowed_quality`; `observe` feeds it finished requests' latency."""

    def __init__(self, settings: QualitySettings) -> None:
        self.settings = settings
        self._mean_s: float | None = None
        self._narrowed = False

    @property
    def quality(self) -> float:
        return self.settings.narrowed_quality if self._narrowed else FULL_QUALITY

    @property
    def mean_latency_s(self) -> float | None:
        return self._mean_s

    def observe(self, latency_s: float) -> None:
        weight = self.settings.smoothing
        mean = latency_s if self._mean_s is None else self._mean_s + weight * (latency_s - self._mean_s)
        self._mean_s = mean
        target = self.settings.target_latency_s
        if mean > target:
            self._narrowed = True
        elif mean < target * self.settings.recover_ratio:
            self._narrowed = False
