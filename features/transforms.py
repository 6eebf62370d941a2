"""The closed set of derived-feature transforms, vectorised over rows. No `eval`, nothing user-defined.

Every input is a 2-D array (rows, width) whose rows are 1 (a request-level value, broadcast) or n (one per
candidate); outputs are float32 (n, width). Id lists are int64 padded with negative ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
Array = npt.NDArray[Any]


def log1p(x: Array) -> F32:
    """log(1 + x) of non-negative counts (negative values are clipped to 0 first)."""
    return np.asarray(np.log1p(np.maximum(x.astype(np.float32, copy=False), np.float32(0.0))), dtype=np.float32)


def age(timestamp_s: Array, *, now_s: float, unit_s: float) -> F32:
    """(now - timestamp) in units of `unit_s` seconds, never negative (a clock skew is not a negative age)."""
    seconds = np.float64(now_s) - timestamp_s.astype(np.float64, copy=False)
    return np.asarray(np.maximum(seconds / unit_s, 0.0), dtype=np.float32)


def one_hot(x: Array, categories: tuple[int, ...]) -> F32:
    """One column per category: 1.0 where x equals it (a value in no category is all zeros)."""
    return np.asarray(x.reshape(-1, 1) == np.asarray(categories, dtype=x.dtype), dtype=np.float32)


def dot(a: Array, b: Array) -> F32:
    """Row-wise dot product. Both sides are laid out as contiguous (n, width) first, so a broadcast row
    (serving: the member's one row) gives the same bits as the same row repeated (training)."""
    af, bf = _rows(a, b.shape[0]), _rows(b, a.shape[0])
    return np.asarray(np.einsum("ij,ij->i", af, bf).reshape(-1, 1), dtype=np.float32)


def _rows(x: Array, n: int) -> F32:
    """`x` as C-contiguous float32 with max(n, len(x)) rows (a single row repeated)."""
    x = x.astype(np.float32, copy=False)
    if x.shape[0] == 1 and n > 1:
        return np.ascontiguousarray(np.broadcast_to(x, (n, x.shape[1])))
    return np.ascontiguousarray(x)


def cosine(a: Array, b: Array) -> F32:
    """Row-wise cosine similarity; 0 where either vector is zero."""
    af, bf = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
    norms = np.linalg.norm(af, axis=1, keepdims=True) * np.linalg.norm(bf, axis=1, keepdims=True)
    similarity = np.where(norms > 0, dot(af, bf) / np.maximum(norms, np.float32(1e-12)), np.float32(0.0))
    return np.asarray(similarity, dtype=np.float32)


def contains(lists: Array, ids: Array) -> F32:
    """1.0 where the row's id list holds the row's id (a negative id is never held)."""
    column = ids.reshape(-1, 1)
    if lists.shape[0] == 1 and column.shape[0] > 1:  # one request-level list against every candidate: a set test
        held = _member_of(column, lists[0][lists[0] >= 0])
    else:
        held = (lists == column).any(axis=1, keepdims=True) & (column >= 0)
    return np.asarray(held, dtype=np.float32)


_TABLE_MAX_SPAN = 1 << 16  # a 64 KiB table is zeroed in microseconds


def _member_of(values: Array, members: Array) -> npt.NDArray[np.bool_]:
    """`values` in `members`, elementwise. A request's list is short and its ids usually span a modest
    range: then a lookup table over that range (one gather per value) is used, else a binary search in
    the sorted members. Measured on a request's 1,815 x 4 hashtag ids against 19 followed ones: table
    38 us, binary search 127 us, `np.isin` 132 us (it compares once per member; for 81 connections
    spanning 20,000 ids it sorts both arrays together: 148 us against the table's 20 us)."""
    if len(members) == 0:
        return np.zeros(values.shape, dtype=np.bool_)
    low, high = int(members.min()), int(members.max())
    span = high - low + 1
    if span <= max(_TABLE_MAX_SPAN, 16 * values.size):
        table = np.zeros(span + 1, np.bool_)  # the extra last slot is where every value outside the range lands
        table[members - low] = True
        index = values - low
        np.clip(index, -1, span, out=index)  # -1 indexes that last slot too
        found: npt.NDArray[np.bool_] = table[index]
        return found
    ordered = np.sort(members)
    positions = np.searchsorted(ordered, np.ascontiguousarray(values))
    np.minimum(positions, len(ordered) - 1, out=positions)
    return np.asarray(ordered[positions] == values)


def _count_per_row(mask: npt.NDArray[np.bool_]) -> F32:
    """True values per row, (n, 1) float32: a matrix product, ~10x cheaper than a sum over a short axis."""
    return np.asarray(mask.astype(np.float32) @ np.ones((mask.shape[1], 1), np.float32), dtype=np.float32)


def overlap(a: Array, b: Array) -> F32:
    """Fraction of the valid ids of each row of `a` found in the same row of `b` (0 for an empty row)."""
    valid = a >= 0
    # One request-level list against every candidate is a set test; per-row lists compare pairwise.
    found = _member_of(a, b[0][b[0] >= 0]) if b.shape[0] == 1 else (a[:, :, None] == b[:, None, :]).any(axis=2)
    hits = _count_per_row(found & valid)
    return np.asarray(hits / np.maximum(_count_per_row(valid), np.float32(1.0)), dtype=np.float32)


def pool(vectors: F32, positions: npt.NDArray[np.int64], mode: str) -> F32:
    """Pool id-list rows through their vectors. `positions` (n, k) indexes rows of `vectors` (m, dim), -1
    where the list is padded; an empty list pools to zeros. `mode`: mean or sum."""
    # Row 0 of `padded` is zeros, where padding (-1) lands: one gather per list position, added in order.
    padded = np.vstack([np.zeros((1, vectors.shape[1]), np.float32), vectors])
    rows = positions + 1
    sums = np.take(padded, rows[:, 0], axis=0) if rows.shape[1] else np.zeros((len(rows), vectors.shape[1]), np.float32)
    for column in range(1, rows.shape[1]):
        sums += np.take(padded, rows[:, column], axis=0)
    if mode == "sum":
        return sums
    counts = np.maximum(_count_per_row(positions >= 0), np.float32(1.0))
    return np.asarray(sums / counts, dtype=np.float32)
