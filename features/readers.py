"""`RowReader`s: the store at a request's pinned table versions (serving), in-memory tables (training)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from features.assembly import RowReader, default_row
from features.declarations import ViewDecl
from kvstore.base import EmbeddingStore

I64 = npt.NDArray[np.int64]


class ViewShapeError(ValueError):
    """A table whose rows do not have the width its view declares."""


class StoreReader:
    """Reads views from their stores at `versions` (table -> version, resolved once per request).

    Rows an id has none of get the view's declared defaults; `missing` counts them per view. A table
    without a pinned version is a KeyError (the caller resolved versions for what it reads); store errors
    propagate (`kvstore.errors.StoreError`).
    """

    def __init__(
        self, stores: Mapping[str, EmbeddingStore], versions: Mapping[str, str], *, timeout_s: float | None
    ) -> None:
        self._stores = stores
        self._versions = versions
        self._timeout_s = timeout_s
        self.missing: dict[str, int] = {}
        # Stores answering from process memory (memory-mapped files) are read one view after another.
        self.sequential = all(getattr(store, "in_process", False) for store in stores.values())

    async def read(self, view: ViewDecl, ids: I64) -> npt.NDArray[Any]:
        store = self._stores[view.store]
        lookup = await store.lookup(view.table, ids, version=self._versions[view.table], timeout_s=self._timeout_s)
        vectors = lookup.vectors
        if vectors.shape[1] != view.width:
            raise ViewShapeError(
                f"view {view.name!r}: table {view.table!r}@{lookup.version} rows have {vectors.shape[1]} values, "
                f"the view declares {view.width}"
            )
        if lookup.missing:
            vectors = vectors.copy()
            vectors[~lookup.found] = default_row(view)
            self.missing[view.name] = self.missing.get(view.name, 0) + lookup.missing
        return vectors


class ArrayReader:
    """Reads views from in-memory tables: table -> (ids, rows). What the trainer assembles from, so its
    matrix goes through the very code serving uses; the same arrays are what it writes to the store."""

    sequential = True

    def __init__(self, tables: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]]) -> None:
        self._tables: dict[str, tuple[I64, npt.NDArray[Any]]] = {}
        for table, (ids, rows) in tables.items():
            id_array = np.asarray(ids, dtype=np.int64)
            order = np.argsort(id_array, kind="stable")
            self._tables[table] = (id_array[order], np.asarray(rows)[order])

    async def read(self, view: ViewDecl, ids: I64) -> npt.NDArray[Any]:
        table_ids, rows = self._tables[view.table]
        dtype = np.int64 if view.dtype == "int64" else np.float32
        if rows.shape[1] != view.width:
            raise ViewShapeError(
                f"view {view.name!r}: table {view.table!r} has width {rows.shape[1]}, not {view.width}"
            )
        out = np.empty((len(ids), view.width), dtype=dtype)
        if len(table_ids) == 0:
            out[:] = default_row(view)
            return out
        positions = np.minimum(np.searchsorted(table_ids, ids), len(table_ids) - 1)
        found = table_ids[positions] == ids
        out[found] = rows[positions[found]]
        out[~found] = default_row(view)
        return out


if TYPE_CHECKING:
    _store_reader: type[RowReader] = StoreReader
    _array_reader: type[RowReader] = ArrayReader
