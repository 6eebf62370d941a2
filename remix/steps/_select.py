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
