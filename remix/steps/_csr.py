"""Vectorised gathers over CSR lists (`indptr`, `indices`): no Python loop per row."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def gather(
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.generic],
    rows: npt.NDArray[np.integer],
    per_row: int | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Concatenates the first `per_row` entries (all when None) of each row in `rows`, in row order.

    Returns (values as int64, position in `rows` each value came from).
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts = np.asarray(indptr[rows], dtype=np.int64)
    lengths = np.asarray(indptr[rows + 1], dtype=np.int64) - starts
    if per_row is not None:
        lengths = np.minimum(lengths, per_row)
    total = int(lengths.sum())
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    offsets = np.cumsum(lengths) - lengths  # where each row's run begins in the output
    positions = np.arange(total, dtype=np.int64) - offsets[owner] + starts[owner]
    return np.asarray(indices[positions], dtype=np.int64), owner


def invert(
    rows: npt.NDArray[np.int64],
    targets: npt.NDArray[np.int64],
    n_targets: int,
    order_key: npt.NDArray[np.generic] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The transpose of the pairs (rows[i] -> targets[i]): target -> rows, as CSR (indptr, indices).

    Within a target, rows are ordered by `order_key` (one value per pair) ascending, then by row id.
    `indptr` has max(n_targets, largest target + 1) + 1 entries.
    """
    keys: tuple[np.ndarray, ...] = (rows, targets) if order_key is None else (rows, order_key, targets)
    order = np.lexsort(keys)
    counts = np.bincount(targets, minlength=n_targets)
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, np.asarray(rows[order], dtype=np.int64)
