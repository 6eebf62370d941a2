"""The writer side of versioned tables: the `TableAdmin` protocol offline tools use, and its embedded form.

Serving reads through `EmbeddingStore`; loaders, operators and tests write through `TableAdmin`: write a
complete version (never current by itself), count what landed, make a version current (also rollback),
list and delete versions. A version is immutable once written; the current one is never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from kvstore import embedded
from kvstore.base import EmbeddingStore, Lookup, TableInfo
from kvstore.errors import TableNotFound

Progress = Callable[[int, int], None]
"""`(rows written so far, total rows)`, called as a write advances."""


@dataclass(frozen=True)
class VersionInfo:
    info: TableInfo
    created_at: str  # ISO 8601, UTC
    current: bool
    state: str = "complete"  # 'complete', or 'writing'/'deleting' for a version being pushed or removed


@runtime_checkable
class TableAdmin(EmbeddingStore, Protocol):
    """An `EmbeddingStore` that can also be written. All methods need `start()` first."""

    async def write_version(
        self,
        table: str,
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.floating],
        *,
        dtype: str = "float32",
        version: str | None = None,
        on_progress: Progress | None = None,
    ) -> str:
        """Write a complete new version and return its name; the current version does not change.

        ValueError for bad arguments (duplicate ids, values not finite in `dtype`, a version name taken).
        """
        ...

    async def count_present(self, table: str, version: str, ids: npt.NDArray[np.int64]) -> int:
        """How many of `ids` (unique) have a row in `version`."""
        ...

    async def set_current(self, table: str, version: str) -> None:
        """Make a complete `version` current, atomically (`TableNotFound` for an unknown one)."""
        ...

    async def current_version(self, table: str) -> str | None: ...

    async def list_tables(self) -> list[str]: ...

    async def list_versions(self, table: str) -> list[VersionInfo]:
        """Every version of `table`, oldest first ([] for an unknown table)."""
        ...

    async def delete_version(self, table: str, version: str) -> None:
        """Remove a version that is not current (ValueError for the current one)."""
        ...


class EmbeddedAdmin(embedded.EmbeddedStore):
    """`TableAdmin` over `kvstore.embedded`'s files: the store plus its writer functions."""

    def __init__(self, root: Path, name: str = "embedded") -> None:
        super().__init__(root, name)

    @property
    def root(self) -> Path:
        return self._root

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        await super().start()

    async def write_version(
        self,
        table: str,
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.floating],
        *,
        dtype: str = "float32",
        version: str | None = None,
        on_progress: Progress | None = None,
    ) -> str:
        written = embedded.write_version(self.root, table, ids, vectors, dtype=dtype, version=version)
        if on_progress is not None:
            on_progress(len(ids), len(ids))
        embedded.verify_version(self.root, table, written)  # checksum of every byte against meta.json
        return written

    async def lookup(
        self, table: str, ids: npt.NDArray[np.int64], *, version: str, timeout_s: float | None = None
    ) -> Lookup:
        """As the store's, and also for a table that has no current version yet (a first push)."""
        if embedded.current_version(self.root, table) is not None:
            return await super().lookup(table, ids, version=version, timeout_s=timeout_s)
        # Package-internal helpers: the reader's own mapping and gather, without the CURRENT discovery.
        mapped = embedded._map_version(self.root, table, version, name=self.name)
        vectors, found = embedded._gather(mapped, np.asarray(ids, dtype=np.int64))
        return Lookup(vectors=vectors, found=found, version=version)

    async def count_present(self, table: str, version: str, ids: npt.NDArray[np.int64]) -> int:
        return int(np.count_nonzero((await self.lookup(table, ids, version=version)).found))

    async def set_current(self, table: str, version: str) -> None:
        embedded.set_current(self.root, table, version)

    async def current_version(self, table: str) -> str | None:
        return embedded.current_version(self.root, table)

    async def list_tables(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(entry.name for entry in self.root.iterdir() if (entry / "versions").is_dir())

    async def list_versions(self, table: str) -> list[VersionInfo]:
        current = embedded.current_version(self.root, table)
        out = []
        for version in embedded.list_versions(self.root, table):
            meta = json.loads((embedded._version_dir(self.root, table, version) / "meta.json").read_text())
            info = TableInfo(table, version, int(meta["dim"]), str(meta["dtype"]), int(meta["count"]))
            out.append(VersionInfo(info=info, created_at=str(meta["created_at"]), current=version == current))
        return sorted(out, key=lambda v: (v.created_at, v.info.version))

    async def delete_version(self, table: str, version: str) -> None:
        if version == embedded.current_version(self.root, table):
            raise ValueError(f"{table}@{version} is current: make another version current first")
        directory = embedded._version_dir(self.root, table, version)
        if not (directory / "meta.json").is_file():
            raise TableNotFound(f"no version {version!r}", store=self.name, table=table)
        # Renamed first so the version disappears at once; readers that mapped it keep their mapping.
        doomed = directory.with_name(f".gc-{version}-{os.getpid()}")
        directory.rename(doomed)
        shutil.rmtree(doomed)


if TYPE_CHECKING:
    _conforms: type[TableAdmin] = EmbeddedAdmin
