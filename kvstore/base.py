"""The EmbeddingStore protocol: versioned tables of fixed-dimension vectors keyed by int64 ids."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

TABLE_DTYPES: tuple[str, ...] = ("float16", "float32", "int64")
"""Storage dtypes of a table. Float tables hold vectors and scalars; int64 tables hold ids and id lists
(multi-valued ids padded with -1)."""


def lookup_dtype(stored: str) -> np.dtype[np.float32] | np.dtype[np.int64]:
    """The dtype lookups return for a table stored as `stored`: float32 for float tables (float16 widens
    exactly), int64 for int64 tables."""
    if stored == "int64":
        return np.dtype(np.int64)
    if stored in ("float16", "float32"):
        return np.dtype(np.float32)
    raise ValueError(f"dtype must be one of {TABLE_DTYPES}, got {stored!r}")


@dataclass(frozen=True)
class TableInfo:
    name: str
    version: str
    dim: int
    dtype: str  # storage dtype, one of TABLE_DTYPES; lookups return `lookup_dtype(dtype)`
    count: int
    created_at: str | None = None  # ISO-8601 UTC time the version was written, when the store knows it


@dataclass(frozen=True)
class Lookup:
    """Result of one bulk lookup. Rows follow the order of the ids asked for.

    `vectors` is (n, dim), float32 for float tables and int64 for int64 tables (`lookup_dtype`); rows
    whose `found` is False are zeros (callers apply defaults).
    """

    vectors: npt.NDArray[Any]
    found: npt.NDArray[np.bool_]
    version: str

    @functools.cached_property
    def missing(self) -> int:
        """Ids without a row (counted once: the store's metrics and the reader both ask)."""
        return int(len(self.found) - np.count_nonzero(self.found))


@runtime_checkable
class EmbeddingStore(Protocol):
    """Versioned embedding tables.

    A version becomes current atomically. A request calls `current_versions` once and passes the
    version to every `lookup`, so it never mixes two versions of a table. `lookup` fetches in bulk,
    never one round trip per id, and raises only `kvstore.errors.StoreError` subclasses.

    A store may set `in_process = True` when its lookups never wait on I/O (memory-mapped files): callers
    then read tables one after another rather than as concurrent tasks (which would only add overhead).
    """

    name: str

    async def start(self) -> None: ...

    async def current_versions(self, tables: Sequence[str]) -> dict[str, str]: ...

    async def info(self, table: str, version: str | None = None) -> TableInfo: ...

    async def lookup(
        self,
        table: str,
        ids: npt.NDArray[np.int64],
        *,
        version: str,
        timeout_s: float | None = None,
    ) -> Lookup: ...

    async def close(self) -> None: ...


def as_ids(ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """`ids` as a 1-D int64 array (no copy when it already is one); ValueError for anything else."""
    query = np.asarray(ids)
    if query.ndim != 1 or (query.size and query.dtype.kind not in "iu"):
        raise ValueError(f"ids must be a 1-D integer array, got {query.dtype} {query.shape}")
    return query.astype(np.int64, copy=False)


def sorted_table(ids: npt.ArrayLike, vectors: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], np.ndarray]:
    """A table to write, checked and sorted by id: (int64 ids ascending, their vectors in that order).
    ValueError for ids that are not 1-D integers, do not fit in int64 or repeat, and for vectors that
    are not [len(ids), dim >= 1]."""
    id_array, matrix = np.asarray(ids), np.asarray(vectors)
    if id_array.ndim != 1 or (id_array.size and id_array.dtype.kind not in "iu"):
        raise ValueError(f"ids must be a 1-D integer array, got {id_array.dtype} {id_array.shape}")
    if id_array.dtype.kind == "u" and id_array.size and id_array.max() > np.iinfo(np.int64).max:
        raise ValueError("ids must fit in int64")
    if matrix.ndim != 2 or matrix.shape[0] != id_array.shape[0] or matrix.shape[1] < 1:
        raise ValueError(f"vectors must be [{id_array.shape[0]}, dim >= 1], got {matrix.shape}")
    order = np.argsort(id_array, kind="stable")
    sorted_ids = id_array[order].astype(np.int64)
    duplicated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if duplicated.size:
        raise ValueError(f"{duplicated.size} duplicate ids, e.g. {int(duplicated[0])}")
    return sorted_ids, matrix[order]
