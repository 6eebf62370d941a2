"""`StoreDecorator`: an `EmbeddingStore` that forwards everything to `inner`; subclasses override a part."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kvstore.base import EmbeddingStore, Lookup, TableInfo


class StoreDecorator:
    def __init__(self, inner: EmbeddingStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.in_process: bool = getattr(inner, "in_process", False)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def current_versions(self, tables: Sequence[str]) -> dict[str, str]:
        return await self.inner.current_versions(tables)

    async def info(self, table: str, version: str | None = None) -> TableInfo:
        return await self.inner.info(table, version)

    async def lookup(
        self, table: str, ids: npt.NDArray[np.int64], *, version: str, timeout_s: float | None = None
    ) -> Lookup:
        return await self.inner.lookup(table, ids, version=version, timeout_s=timeout_s)


if TYPE_CHECKING:
    _conforms: type[EmbeddingStore] = StoreDecorator
