"""Top-k selection without sorting whole arrays."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from remix.steps.candidates import ItemType

ITEM_TYPE_NAMES: dict[str, ItemType] = {"post": ItemType.POST, "article": ItemType.ARTICLE, "job": ItemType.JOB}


def top_k(scores: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.int64]:
    """Indices of the k highest scores (all when fewer), best first; ties keep index order."""
    n = len(scores)
    if k < n:
        chosen = np.argpartition(-scores, k - 1)[:k]
        return np.asarray(chosen[np.lexsort((chosen, -scores[chosen]))], dtype=np.int64)
    return np.asarray(np.argsort(-scores, kind="stable"), dtype=np.int64)


def type_codes(names: tuple[str, ...]) -> npt.NDArray[np.int8]:
    return np.array(sorted({int(ITEM_TYPE_NAMES[name]) for name in names}), dtype=np.int8)
