"""Default vectors for ids a table has no row for, configured per table on the steps that look them up."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from kvstore.base import Lookup
from remix.failures import DependencyFailure

DefaultVectors = dict[str, list[float]]


def check_defaults(defaults: Mapping[str, list[float]], tables: Iterable[str]) -> DefaultVectors:
    """`defaults` (table -> vector) if it names only `tables` and holds non-empty finite vectors."""
    known = sorted(tables)
    unknown = sorted(set(defaults) - set(known))
    if unknown:
        raise ValueError(f"defaults name tables {unknown} this step does not read (it reads {known})")
    for table, vector in defaults.items():
        if not vector or not all(math.isfinite(v) for v in vector):
            raise ValueError(f"the default vector of {table!r} must be non-empty and finite")
    return dict(defaults)


def with_defaults(lookup: Lookup, default: list[float] | None, *, table: str, step: str) -> npt.NDArray[np.float32]:
    """`lookup.vectors`, rows of ids without a row in the store set to `default` (zeros when None,
    explicitly: the result does not depend on what a store puts in rows it did not find).

    A default whose length is not the table's dim is a DependencyFailure naming both.
    """
    if lookup.found.all():
        return lookup.vectors
    vector = np.zeros(lookup.vectors.shape[1:], np.float32) if default is None else np.asarray(default, np.float32)
    if vector.shape != lookup.vectors.shape[1:]:
        raise DependencyFailure(
            f"the default vector of {table!r} has {len(vector)} values, the table's rows {lookup.vectors.shape[1]}",
            step=step,
        )
    vectors = lookup.vectors.copy()
    vectors[~lookup.found] = vector
    return vectors
