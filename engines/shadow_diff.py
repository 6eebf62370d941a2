"""Shadow diffs: how far a shadow target's answer is from the primary's answer to the same call.

Both answers score the same rows (the same candidates, from the same inputs), so row `i` of one is row
`i` of the other and orderings compare row indices. A score output is `(rows,)` (one head) or
`(rows, heads)`; each column is a head, and a higher score ranks a row higher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau

MAX_UNDESCRIBED_COLUMNS = 16
"""An output nobody described that is wider than this is not compared: it is an embedding or the like,
not scores, and one metric series per column would swamp the metrics."""


class Incomparable(ValueError):
    """The two answers cannot be compared: an output missing from one, different shapes, non-numeric or
    non-finite values, no rows, or heads described other than the output is shaped. An outcome to count,
    never an error to pass on."""


@dataclass(frozen=True)
class HeadDiff:
    """One head's figures. Deltas are absolute, in the head's score units, over all rows.
    `topk_overlap`: |topK(primary) ∩ topK(shadow)| / K, in [0, 1]. `kendall_tau`: Kendall's tau-b of the
    two orderings of all rows, in [-1, 1]; None where it is undefined (under 2 rows, or a side scoring
    every row alike)."""

    mean_abs_delta: float
    max_abs_delta: float
    topk_overlap: float
    kendall_tau: float | None


@dataclass(frozen=True)
class Comparison:
    """What `compare` finds: the rows compared and each head's figures (in output, then column order)."""

    rows: int
    heads: Mapping[str, HeadDiff]


@dataclass(frozen=True)
class ShadowDiff:
    """One shadow answer compared with the primary answer to the same call of logical model `model`:
    `target` is the shadow's target label, `primary` the label of the target that answered the caller
    (the primary or a fallback)."""

    model: str
    target: str
    primary: str
    rows: int
    heads: Mapping[str, HeadDiff]


def head_labels(output: str, columns: int) -> list[str]:
    """Labels of an undescribed output's columns: `<output>` for one column, else `<output>[<i>]`."""
    if columns == 1:
        return [output]
    return [f"{output}[{i}]" for i in range(columns)]


def compare(
    primary: Mapping[str, np.ndarray],
    shadow: Mapping[str, np.ndarray],
    heads: Mapping[str, Sequence[str]] | None,
    top_k: int,
) -> Comparison:
    """Compare the outputs of two answers to the same call, head by head.

    `heads`: output name -> its head names, one per column (the model's described outputs). With it,
    exactly the described outputs are compared (an output described with no heads is skipped on
    purpose); without it, every output of `primary`, its columns labelled by `head_labels`, except those
    wider than `MAX_UNDESCRIBED_COLUMNS`. Outputs the shadow has and the primary lacks are ignored.
    K = min(top_k, rows); ties at the K-th score are broken arbitrarily (alike for equal answers).

    Raises `Incomparable` (see there) and ValueError for `top_k` < 1.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    labels: list[str] = []
    primary_parts: list[np.ndarray] = []
    shadow_parts: list[np.ndarray] = []
    for name in primary if heads is None else heads:
        described = None if heads is None else heads[name]
        if described is not None and not described:
            continue
        ours, theirs = _matrix("primary", name, primary), _matrix("shadow", name, shadow)
        if ours.shape != theirs.shape:
            raise Incomparable(f"output {name!r} is shaped {ours.shape} by the primary, {theirs.shape} by the shadow")
        columns = ours.shape[1]
        if described is None:
            if columns > MAX_UNDESCRIBED_COLUMNS:
                continue
            labels.extend(head_labels(name, columns))
        elif len(described) != columns:
            raise Incomparable(f"output {name!r} has {columns} columns, described as heads {list(described)}")
        else:
            labels.extend(described)
        primary_parts.append(ours)
        shadow_parts.append(theirs)
    if not primary_parts:
        raise Incomparable("no output to compare")
    row_counts = {part.shape[0] for part in primary_parts}
    if len(row_counts) > 1:
        raise Incomparable(f"outputs differ in rows: {sorted(row_counts)}")
    (rows,) = row_counts
    if rows == 0:
        raise Incomparable("no rows")
    if len(set(labels)) != len(labels):
        raise Incomparable(f"head labels collide: {labels}")
    ours_all = np.concatenate(primary_parts, axis=1)
    theirs_all = np.concatenate(shadow_parts, axis=1)
    delta = np.abs(ours_all - theirs_all)
    mean, worst = delta.mean(axis=0), delta.max(axis=0)
    overlap = _topk_overlap(ours_all, theirs_all, min(top_k, rows))
    return Comparison(
        rows=rows,
        heads={
            label: HeadDiff(
                mean_abs_delta=float(mean[j]),
                max_abs_delta=float(worst[j]),
                topk_overlap=float(overlap[j]),
                kendall_tau=_kendall_tau(ours_all[:, j], theirs_all[:, j]),
            )
            for j, label in enumerate(labels)
        },
    )


def _matrix(side: str, name: str, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The output as a (rows, columns) float64 matrix (a copy), or `Incomparable`."""
    if name not in outputs:
        raise Incomparable(f"the {side} answer has no output {name!r}")
    values = np.asarray(outputs[name])
    if values.dtype.kind not in "biuf":
        raise Incomparable(f"output {name!r} of the {side} is {values.dtype}, not numbers")
    if values.ndim == 1:
        values = values[:, np.newaxis]
    elif values.ndim != 2:
        raise Incomparable(f"output {name!r} of the {side} has {values.ndim} dimensions; scores have 1 or 2")
    matrix = values.astype(np.float64)
    if not np.isfinite(matrix).all():
        raise Incomparable(f"output {name!r} of the {side} holds non-finite values")
    return matrix


def _topk_overlap(ours: np.ndarray, theirs: np.ndarray, k: int) -> np.ndarray:
    """Per column, the share of the k highest-scored rows of `ours` that are among those of `theirs`."""
    in_ours = np.zeros(ours.shape, dtype=bool)
    in_theirs = np.zeros(theirs.shape, dtype=bool)
    np.put_along_axis(in_ours, np.argpartition(-ours, k - 1, axis=0)[:k], True, axis=0)
    np.put_along_axis(in_theirs, np.argpartition(-theirs, k - 1, axis=0)[:k], True, axis=0)
    overlap: np.ndarray = (in_ours & in_theirs).sum(axis=0) / k
    return overlap


def _kendall_tau(ours: np.ndarray, theirs: np.ndarray) -> float | None:
    # scipy answers NaN (and warns) for these; None keeps NaN out of histograms and sinks.
    if ours.size < 2 or ours.min() == ours.max() or theirs.min() == theirs.max():
        return None
    tau = float(kendalltau(ours, theirs).statistic)
    return None if math.isnan(tau) else tau
