"""The EmbeddingStore protocol: versioned tables of fixed-dimension vectors keyed by int64 ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class TableInfo:
    name: str
    version: str
    dim: int
    dtype: str  # storage dtype: 'float16' or 'float32'; lookups always return float32
    count: int


@dataclass(frozen=True)
class Lookup:
    """Result of one bulk lookup. Rows follow the order of the ids asked for.

    `vectors` is float32 (n, dim); rows whose `found` is False are zeros (callers apply defaults).
    """

    vectors: npt.NDArray[np.float32]
    found: npt.NDArray[np.bool_]
    version: str

    @property
    def missing(self) -> int:
        return int(len(self.found) - np.count_nonzero(self.found))


@runtime_checkable
class EmbeddingStore(Protocol):
    """Versioned embedding tables.

    A version becomes current atomically. A request calls `current_versions` once and passes the
    version to every `lookup`, so it never mixes two versions of a table. `lookup` fetches in bulk,
    never one round trip per id, and raises only `kvstore.errors.StoreError` subclasses.
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
