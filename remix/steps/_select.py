"""Top-k selection without sorting whole arrays."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def top_k(scores: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.int64]:
    """Indices of the k highest scores (all when fewer), best first; ties keep index order."""
    n = len(scores)
    if k < n:
        chosen = np.argpartition(-scores, k - 1)[:k]
        return np.asarray(chosen[np.lexsort((chosen, -scores[chosen]))], dtype=np.int64)
    return np.asarray(np.argsort(-scores, kind="stable"), dtype=np.int64)


def run_starts(ordered: npt.NDArray[np.generic]) -> npt.NDArray[np.int64]:
    """Index of the first element of each run of equal values in `ordered` (sorted); empty for no values."""
    if len(ordered) == 0:
        return np.zeros(0, np.int64)
    changes = np.empty(len(ordered), np.bool_)
    changes[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=changes[1:])
    return np.flatnonzero(changes)
