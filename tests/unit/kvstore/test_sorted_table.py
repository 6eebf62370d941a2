"""The one check-and-sort every store's writer runs before a table is written."""

from __future__ import annotations

import numpy as np
import pytest

from kvstore.base import sorted_table


def test_ids_come_back_as_ascending_int64_with_their_vectors() -> None:
    ids, vectors = sorted_table(np.array([30, 10, 20], dtype=np.uint32), np.array([[3.0], [1.0], [2.0]]))
    assert ids.dtype == np.int64
    assert ids.tolist() == [10, 20, 30]
    assert vectors[:, 0].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        # Would wrap to a negative int64 and silently collide with another id.
        (np.array([2**63, 1], dtype=np.uint64), np.ones((2, 1)), "ids must fit in int64"),
        (np.array([1, 2, 2]), np.ones((3, 1)), "1 duplicate ids, e.g. 2"),
        (np.array([1.0, 2.0]), np.ones((2, 1)), "ids must be a 1-D integer array"),
        (np.array([1, 2]), np.ones((3, 1)), r"vectors must be \[2, dim >= 1\]"),
    ],
    ids=["beyond-int64", "duplicates", "float-ids", "shape"],
)
def test_bad_tables_are_refused(ids: np.ndarray, vectors: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sorted_table(ids, vectors)
