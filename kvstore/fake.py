"""`InMemoryStore`: an `EmbeddingStore` in dicts, for tests, with hooks to fail or block lookups."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kvstore.base import EmbeddingStore, Lookup, TableInfo, lookup_dtype
from kvstore.errors import StoreError, StoreTimeout, StoreUnavailable, TableNotFound


@dataclass(frozen=True)
class _Version:
    rows: dict[int, npt.NDArray[np.float32]]  # already rounded through the storage dtype
    info: TableInfo


@dataclass(frozen=True)
class FakeLookup:
    """One recorded `lookup` call."""

    table: str
    version: str
    ids: npt.NDArray[np.int64]
    timeout_s: float | None


class InMemoryStore:
    """Tables as dicts of version -> rows, behaving like the real stores: float16 storage rounds values,
    missing ids come back as zero rows with `found` False, unknown tables and versions raise
    `TableNotFound`, a lookup blocked past `timeout_s` raises `StoreTimeout`, and nothing works outside
    start..close (`StoreUnavailable`).

    Test setup: `put(...)`, `set_current(...)`. Hooks: `fail_with(error, table=None)`,
    `block_until(event, table=None)`; `lookups` records calls, `entered` is set when a lookup begins.
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._tables: dict[str, dict[str, _Version]] = {}
        self._current: dict[str, str] = {}
        self._errors: dict[str | None, StoreError] = {}
        self._gates: dict[str | None, asyncio.Event] = {}
        self.entered = asyncio.Event()
        self.lookups: list[FakeLookup] = []
        self.started = False

    def put(
        self,
        table: str,
        ids: npt.ArrayLike,
        vectors: npt.ArrayLike,
        *,
        version: str = "v1",
        dtype: str = "float32",
        make_current: bool = True,
        created_at: str | None = None,
    ) -> None:
        """Store a version of `table` (ids unique; vectors [n, dim]); make it current unless told not to."""
        id_list = [int(i) for i in np.asarray(ids).reshape(-1)]
        matrix = np.asarray(vectors)
        if matrix.ndim != 2 or matrix.shape[0] != len(id_list) or len(set(id_list)) != len(id_list):
            raise ValueError("ids must be unique and vectors [len(ids), dim]")
        stored = matrix.astype(dtype).astype(lookup_dtype(dtype))
        rows = {i: stored[k] for k, i in enumerate(id_list)}
        info = TableInfo(
            name=table, version=version, dim=matrix.shape[1], dtype=dtype, count=len(id_list), created_at=created_at
        )
        self._tables.setdefault(table, {})[version] = _Version(rows=rows, info=info)
        if make_current:
            self._current[table] = version

    def set_current(self, table: str, version: str) -> None:
        self._version(table, version)
        self._current[table] = version

    def fail_with(self, error: StoreError | None, table: str | None = None) -> None:
        """Make lookups (of `table`, or all) raise `error`; None clears."""
        if error is None:
            self._errors.pop(table, None)
        else:
            self._errors[table] = error

    def block_until(self, event: asyncio.Event | None, table: str | None = None) -> None:
        """Make lookups (of `table`, or all) wait for `event`; None clears."""
        if event is None:
            self._gates.pop(table, None)
        else:
            self._gates[table] = event

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    async def current_versions(self, tables: Sequence[str]) -> dict[str, str]:
        self._check_started()
        result = {}
        for table in tables:
            if table not in self._current:
                raise self._no_table(table)
            result[table] = self._current[table]
        return result

    async def info(self, table: str, version: str | None = None) -> TableInfo:
        self._check_started()
        if version is None:
            version = (await self.current_versions([table]))[table]
        return self._version(table, version).info

    async def lookup(
        self,
        table: str,
        ids: npt.NDArray[np.int64],
        *,
        version: str,
        timeout_s: float | None = None,
    ) -> Lookup:
        self._check_started()
        stored = self._version(table, version)
        query = np.asarray(ids, dtype=np.int64)
        self.lookups.append(FakeLookup(table=table, version=version, ids=query.copy(), timeout_s=timeout_s))
        try:
            async with asyncio.timeout(timeout_s) as scope:
                await self._play(table)
        except TimeoutError:
            if scope.expired():
                raise StoreTimeout(f"lookup not done within {timeout_s}s", store=self.name, table=table) from None
            raise
        vectors = np.zeros((len(query), stored.info.dim), dtype=lookup_dtype(stored.info.dtype))
        found = np.zeros(len(query), dtype=np.bool_)
        for position, key in enumerate(query.tolist()):
            row = stored.rows.get(key)
            if row is not None:
                vectors[position] = row
                found[position] = True
        return Lookup(vectors=vectors, found=found, version=version)

    async def _play(self, table: str) -> None:
        self.entered.set()
        error = self._errors.get(table) or self._errors.get(None)
        if error is not None:
            raise error
        gate = self._gates.get(table) or self._gates.get(None)
        if gate is not None:
            await gate.wait()

    def _check_started(self) -> None:
        if not self.started:
            raise StoreUnavailable("store is not started", store=self.name)

    def _version(self, table: str, version: str) -> _Version:
        versions = self._tables.get(table)
        if versions is None:
            raise self._no_table(table)
        if version not in versions:
            raise TableNotFound(f"no version {version!r}; versions: {sorted(versions)}", store=self.name, table=table)
        return versions[version]

    def _no_table(self, table: str) -> TableNotFound:
        return TableNotFound(f"no table {table!r}; tables: {sorted(self._tables)}", store=self.name, table=table)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a caller
    _conforms: type[EmbeddingStore] = InMemoryStore
