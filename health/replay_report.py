"""The replay report: per-request comparisons aggregated over the requests, against the noise.

`ReplayReport` holds each `RequestReplay`, the requests skipped and, per metric, a `MetricSummary` of the
difference and the noise (`_summaries` decides which metrics are above the noise); it renders as JSON
(`to_json`) or a rich table (`table`, `render`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from health.comparison import Comparison, _distance


@dataclass(frozen=True)
class Summary:
    """Aggregate of one metric over the replayed requests (NaN values, e.g. an undefined tau, left out)."""

    mean: float
    p50: float
    min: float
    max: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        finite = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
        if finite.size == 0:
            return cls(math.nan, math.nan, math.nan, math.nan, 0)
        return cls(
            float(finite.mean()), float(np.median(finite)), float(finite.min()), float(finite.max()), finite.size
        )


@dataclass(frozen=True)
class MetricSummary:
    """One metric: its `difference` (candidate against capture) and `noise` (primary against secondary)
    over the requests. `above_noise`: the mean distance from agreement of the difference exceeds the noise's
    by more than the noise margin (see `replay`)."""

    metric: str
    difference: Summary
    noise: Summary
    above_noise: bool


@dataclass(frozen=True)
class RequestReplay:
    """One replayed request: where it was read, the call replayed, how many rows were scored (and removed
    by a drop-source), the candidate's `difference` from the capture and the worst `noise` measured."""

    request_id: str
    where: str
    model: str
    target: str
    rows: int
    rows_removed: int
    difference: Comparison
    noise: Comparison


@dataclass(frozen=True)
class ReplayReport:
    """Per-request figures and their aggregates (`metrics`), the requests skipped (with why), and what
    was replayed. `differences` are the metrics above the noise: the only ones a reader should act on."""

    model: str | None
    top_k: int
    perturbation: str | None
    repeats: int
    requests: tuple[RequestReplay, ...]
    skipped: tuple[tuple[str, str], ...]  # (request id or file:line, reason)
    metrics: tuple[MetricSummary, ...]

    @property
    def differences(self) -> tuple[MetricSummary, ...]:
        return tuple(m for m in self.metrics if m.above_noise)

    @property
    def zero_difference(self) -> bool:
        """Every request ranked exactly as captured with exactly the captured scores."""
        for request in self.requests:
            for metric, value in request.difference.metrics(self.top_k).items():
                if not math.isnan(value) and _distance(metric, value) != 0.0:
                    return False
        return True

    def to_json(self) -> dict[str, Any]:
        """Plain values (NaN stays a float: serialise with orjson, which writes it as null)."""
        return {
            "model": self.model,
            "top_k": self.top_k,
            "perturbation": self.perturbation,
            "repeats": self.repeats,
            "replayed": len(self.requests),
            "zero_difference": self.zero_difference,
            "metrics": [
                {
                    "metric": m.metric,
                    "difference": vars(m.difference),
                    "noise": vars(m.noise),
                    "above_noise": m.above_noise,
                }
                for m in self.metrics
            ],
            "requests": [
                {
                    "request_id": r.request_id,
                    "where": r.where,
                    "model": r.model,
                    "target": r.target,
                    "rows": r.rows,
                    "rows_removed": r.rows_removed,
                    "difference": r.difference.metrics(self.top_k),
                    "noise": r.noise.metrics(self.top_k),
                }
                for r in self.requests
            ],
            "skipped": [{"request": who, "reason": why} for who, why in self.skipped],
        }

    def table(self) -> Table:
        """The aggregate metrics as a rich table: the difference (mean, p50, min, max), the noise (its
        mean) and whether the difference is beyond it."""
        what = f"replay of {len(self.requests)} request(s)"
        if self.perturbation:
            what += f", perturbed by {self.perturbation}"
        table = Table(
            title=what,
            title_justify="left",
            caption="noise: the baseline against itself (mean); differs: beyond the noise",
            caption_justify="left",
        )
        for column in ("metric", "mean", "p50", "min", "max", "noise", ""):
            table.add_column(column, justify="left" if column == "metric" else "right", no_wrap=True)
        for m in self.metrics:
            d = m.difference
            verdict = "[bold red]differs[/]" if m.above_noise else ""
            table.add_row(m.metric, *(_fmt(v) for v in (d.mean, d.p50, d.min, d.max, m.noise.mean)), verdict)
        return table

    def render(self, console: Console) -> None:
        console.print(self.table())
        if not self.requests:
            console.print("no request was replayed")
        elif self.zero_difference:
            console.print("zero difference: every request ranked and scored exactly as captured")
        else:
            console.print(f"{len(self.differences)} of {len(self.metrics)} metrics differ beyond the noise")
        reasons: dict[str, int] = {}
        for _, why in self.skipped:
            reasons[why] = reasons.get(why, 0) + 1
        for why, count in sorted(reasons.items()):
            console.print(f"skipped {count} request(s): {why}")


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def _summaries(replayed: Sequence[RequestReplay], top_k: int, noise_margin: float) -> tuple[MetricSummary, ...]:
    if not replayed:
        return ()
    names = list(replayed[0].difference.metrics(top_k))
    differences = [r.difference.metrics(top_k) for r in replayed]
    noises = [r.noise.metrics(top_k) for r in replayed]
    summaries = []
    for name in names:
        diff_values = [d.get(name, math.nan) for d in differences]
        noise_values = [n.get(name, math.nan) for n in noises]
        diff_distance = Summary.of(_distance(name, v) for v in diff_values).mean
        noise_distance = Summary.of(_distance(name, v) for v in noise_values).mean
        noise_distance = 0.0 if math.isnan(noise_distance) else noise_distance
        above = not math.isnan(diff_distance) and diff_distance > noise_distance * (1.0 + noise_margin)
        summaries.append(MetricSummary(name, Summary.of(diff_values), Summary.of(noise_values), above))
    return tuple(summaries)
