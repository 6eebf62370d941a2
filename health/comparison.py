"""Comparing two rankings of a request's rows: the figures a replay reports for each request.

`head_matrix` reads a model's outputs as per-head scores (in the signature's head order) and
`utility_order` ranks the rows by utility exactly as the rank step does; `compare` measures one ranking
against another (top-K overlap, Kendall's tau, rank-biased overlap, per-head score deltas) as a
`Comparison`, and `_worst` keeps, per metric, the comparison farther from agreement (the noise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from features.signature import ModelSignature
from health.ranking import kendall_tau, rbo, topk_overlap
from health.replay_error import ReplayError

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Comparison:
    """One ranking of a request's rows against another. `head_mean_abs`/`head_max_abs`: |score difference|
    per head over the rows both scored (NaN when there are none)."""

    topk_overlap: float
    kendall_tau: float
    rbo: float
    head_mean_abs: Mapping[str, float]
    head_max_abs: Mapping[str, float]

    def metrics(self, top_k: int) -> dict[str, float]:
        """Metric name -> value, in report order."""
        values = {f"top-{top_k} overlap": self.topk_overlap, "kendall tau": self.kendall_tau, "rbo": self.rbo}
        for head in self.head_mean_abs:
            values[f"{head} mean |Δ|"] = self.head_mean_abs[head]
            values[f"{head} max |Δ|"] = self.head_max_abs[head]
        return values


def _is_similarity(metric: str) -> bool:
    return not metric.endswith("|Δ|")


def _distance(metric: str, value: float) -> float:
    """How far from agreement a metric value is: 1 - similarity, or the delta itself."""
    return 1.0 - value if _is_similarity(metric) else value


def compare(
    reference: Sequence[int],
    other: Sequence[int],
    reference_scores: F32,
    other_scores: F32,
    heads: Sequence[str],
    *,
    top_k: int,
    p: float,
) -> Comparison:
    """`other` against `reference` (orders of row indices, best first) and their scores of the same rows
    (row for row: (n, len(heads)) each)."""
    delta = np.abs(other_scores.astype(np.float64) - reference_scores.astype(np.float64))
    empty = delta.shape[0] == 0
    return Comparison(
        topk_overlap=topk_overlap(reference, other, top_k),
        kendall_tau=kendall_tau(reference, other),
        rbo=rbo(reference, other, p),
        head_mean_abs={h: math.nan if empty else float(delta[:, i].mean()) for i, h in enumerate(heads)},
        head_max_abs={h: math.nan if empty else float(delta[:, i].max()) for i, h in enumerate(heads)},
    )


def head_matrix(outputs: Mapping[str, np.ndarray], signature: ModelSignature, n: int, *, who: str) -> F32:
    """float32 (n, len(heads)) of the outputs' columns in the signature's head order (as `rank` reads them).
    ReplayError naming `who` when an output is missing or mis-shaped."""
    columns = []
    for name, heads in signature.outputs.items():
        if name not in outputs:
            raise ReplayError(f"{who}: no output {name!r} (got {sorted(outputs)})")
        value = np.asarray(outputs[name])
        if value.size != n * len(heads) or value.shape[0] != n:
            raise ReplayError(f"{who}: output {name!r} has shape {value.shape}, expected ({n}, {len(heads)})")
        columns.append(value.reshape(n, len(heads)).astype(np.float32, copy=False))
    return columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)


def utility_order(scores: F32, weights: F32) -> list[int]:
    """Row indices by utility = scores @ weights descending, ties in row order: `rank.by_utility`'s order."""
    utility = scores @ weights
    return [int(i) for i in np.argsort(-utility, kind="stable")]


def _identity(heads: Sequence[str]) -> Comparison:
    return Comparison(1.0, 1.0, 1.0, dict.fromkeys(heads, 0.0), dict.fromkeys(heads, 0.0))


def _worst(a: Comparison, b: Comparison) -> Comparison:
    """Per metric, the one of `a` and `b` farther from agreement."""

    def far(x: float, y: float, similarity: bool) -> float:
        if math.isnan(x):
            return y
        if math.isnan(y):
            return x
        return min(x, y) if similarity else max(x, y)

    return Comparison(
        topk_overlap=far(a.topk_overlap, b.topk_overlap, True),
        kendall_tau=far(a.kendall_tau, b.kendall_tau, True),
        rbo=far(a.rbo, b.rbo, True),
        head_mean_abs={h: far(v, b.head_mean_abs[h], False) for h, v in a.head_mean_abs.items()},
        head_max_abs={h: far(v, b.head_max_abs[h], False) for h, v in a.head_max_abs.items()},
    )
