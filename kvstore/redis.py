"""`RedisStore`: versioned embedding tables in Redis or a Redis Cluster. The wire protocol and the
connection pools are `kvstore._redis_wire` (with hiredis, its C parser, behind them); which node answers a
command, and the redirects of a cluster, `kvstore._redis_cluster`.

Key layout: `kvstore._redis_layout`. Values: `kvstore.codec` (float16 or float32 behind a header that
names dtype, dim and table version, so a value of another version is detected, never served).

Request path. `current_versions` is one HMGET. `lookup` packs its MGETs as one numpy matrix (fixed-width
keys), writes them on a pooled connection and lets hiredis parse the reply as it arrives; rows of one
version have one length, so the reply decodes with one join and one `np.frombuffer`. On one server that
is one MGET per `mget_chunk` ids, pipelined in one write; on a cluster, ids are grouped by bucket (one
slot each), each node gets its buckets' MGETs pipelined in one write, and nodes are read concurrently.
redis-py's Python command packing (~1 ms for 1,500 keys) is bypassed: connections are asyncio protocols
feeding `hiredis.Reader` directly.

Connections. Each node has a blocking pool of at most `pool_size` connections: a caller waits for a free
one within its own timeout. A connection carries one request at a time; if that request does not run to
its last reply (cancelled, timed out, failed), the connection is closed instead of returned, so no later
caller can read a reply meant for an earlier one. A connection error is retried once on a new connection
(the first may have been one the server closed); a second failure is `StoreUnavailable`. Every call runs
under one timeout (`timeout_s` per call, else the store's), past which it raises `StoreTimeout`.

Versions: `<prefix>:versions:{table}` holds each version's `VersionMeta` (dim, dtype, count, buckets,
state); `<prefix>:current` maps table -> current version, switched by one HSET. Version metadata is cached
per process (versions are immutable), the current pointer never is.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import hiredis
import numpy as np
import numpy.typing as npt
from redis.crc import key_slot

from kvstore._redis_cluster import Command, Routing
from kvstore._redis_layout import (
    DEFAULT_BUCKETS,
    DEFAULT_PREFIX,
    STATE_COMPLETE,
    STATE_DELETING,
    STATE_WRITING,
    Layout,
    VersionMeta,
    check_name,
    current_key,
    tables_key,
    versions_key,
)
from kvstore._redis_wire import RedisAddress, deadline, pack
from kvstore.admin import Progress, TableAdmin, VersionInfo
from kvstore.base import EmbeddingStore, Lookup, TableInfo, as_ids, lookup_dtype, sorted_table
from kvstore.codec import header, pack_rows, unpack_rows
from kvstore.errors import StoreError, StoreUnavailable, TableNotFound

if TYPE_CHECKING:
    from kvstore.config import RedisTlsConfig

_WRITE_ROWS = 1000  # rows per MSET when writing a version
_WRITE_ROUND = 16  # MSETs per pipelined round trip when writing
_MAX_CACHED_METAS = 1024
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  # no braces: they would move the hash tag


# -- the store -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Version:
    """A version's metadata plus what the request path precomputes from it."""

    meta: VersionMeta
    layout: Layout
    bucket_slots: npt.NDArray[np.int64]  # cluster slot of each bucket
    header: npt.NDArray[np.uint8]
    value_dtype: np.dtype[Any]
    value_length: int


class RedisStore:
    """`EmbeddingStore` and `TableAdmin` on Redis; see the module docstring for the layout and the path.

    `timeout_s` bounds each call that passes none; `connect_timeout_s` each new connection (within the
    call's timeout); `admin_timeout_s` each round trip of the writer methods. `buckets` is the default
    number of buckets for new versions (a version keeps the count it was written with).

    Security: `username` and `password` (an ACL user; AUTH on every new connection) override the URL's;
    `tls` (or a `rediss://` URL) connects over TLS, verified against `tls.ca_file` (else the system's
    roots), with a client certificate when it names one. A refused AUTH is `StoreUnavailable` naming the
    user and Redis's reply, never the password.
    """

    def __init__(
        self,
        url: str,
        name: str = "redis",
        *,
        pool_size: int = 16,
        timeout_s: float = 0.1,
        connect_timeout_s: float = 0.1,
        admin_timeout_s: float = 30.0,
        prefix: str = DEFAULT_PREFIX,
        buckets: int = DEFAULT_BUCKETS,
        mget_chunk: int = 4096,
        username: str | None = None,
        password: str | None = None,
        tls: RedisTlsConfig | None = None,
    ) -> None:
        if pool_size < 1 or mget_chunk < 1 or buckets < 1:
            raise ValueError("pool_size, mget_chunk and buckets must be >= 1")
        for label, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be a positive number of seconds, got {value}")
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r} must match {_PREFIX.pattern}")
        self.name = name
        address = RedisAddress.parse(url)
        if username is not None:
            address = replace(address, username=username)
        if password is not None:
            address = replace(address, password=password)
        # A tls block turns TLS on for a redis:// URL too; rediss:// alone verifies against the system roots.
        self.address = replace(address, tls=address.tls or tls is not None)
        self._routing = Routing(
            self.address, store=name, pool_size=pool_size, connect_timeout_s=connect_timeout_s, tls=tls
        )
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._admin_timeout_s = admin_timeout_s
        self.prefix = self._prefix = prefix
        self._buckets = buckets
        self._mget_chunk = mget_chunk
        self._versions: dict[tuple[str, str], _Version] = {}
        self._current_key = current_key(prefix)
        self._started = False

    @property
    def cluster(self) -> bool:
        return self._started and self._routing.cluster

    def connections(self) -> dict[str, tuple[int, int]]:
        """node -> (idle connections, connections lent out now), for operators and tests."""
        return self._routing.connections()

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and learn the topology (a single server or a cluster's slot map).

        Raises `StoreUnavailable` when the server cannot be reached within the connect timeout.
        """
        await self._routing.start(self._timeout_s + self._connect_timeout_s)
        self._started = True

    async def close(self) -> None:
        self._started = False
        self._routing.close()
        self._versions.clear()

    # -- EmbeddingStore ------------------------------------------------------------------------------------

    async def current_versions(self, tables: Sequence[str]) -> dict[str, str]:
        self._check_started()
        if not tables:
            return {}
        async with self._within(None, table=""):
            reply = await self._command(self._current_key, ("HMGET", self._current_key, *tables))
        versions = {}
        for table, version in zip(tables, reply, strict=True):
            if version is None:
                raise TableNotFound(f"no table {table!r} (it has no current version)", store=self.name, table=table)
            versions[table] = version.decode()
        return versions

    async def info(self, table: str, version: str | None = None) -> TableInfo:
        self._check_started()
        async with self._within(None, table=table):
            if version is None:
                version = (await self.current_versions([table]))[table]
            meta = (await self._version(table, version)).meta
        return TableInfo(
            name=table, version=version, dim=meta.dim, dtype=meta.dtype, count=meta.count, created_at=meta.created_at
        )

    def _within(self, timeout_s: float | None, *, table: str) -> contextlib.AbstractAsyncContextManager[None]:
        return deadline(self._timeout_s if timeout_s is None else timeout_s, store=self.name, table=table)

    async def lookup(
        self,
        table: str,
        ids: npt.NDArray[np.int64],
        *,
        version: str,
        timeout_s: float | None = None,
    ) -> Lookup:
        """Rows for `ids` in their order from exactly `version`, in bulk (see the module docstring)."""
        self._check_started()
        query = as_ids(ids)
        async with self._within(timeout_s, table=table):
            stored = self._versions.get((table, version)) or await self._version(table, version)
            if len(query) == 0:
                return Lookup(
                    np.zeros((0, stored.meta.dim), lookup_dtype(stored.meta.dtype)), np.zeros(0, np.bool_), version
                )
            if self._routing.single is not None:
                values = await self._mget_single(stored, query)
                order = None
            else:
                values, order = await self._mget_cluster(stored, query)
        vectors, found = self._decode(values, stored, table, version)
        if order is not None:  # cluster replies come bucket by bucket: put rows back in query order
            vectors[order], found[order] = vectors.copy(), found.copy()
        return Lookup(vectors=vectors, found=found, version=version)

    # -- TableAdmin -----------------------------------------------------------------------------------------

    async def write_version(
        self,
        table: str,
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.floating],
        *,
        dtype: str = "float32",
        version: str | None = None,
        on_progress: Progress | None = None,
        buckets: int | None = None,
    ) -> str:
        """Write a complete new version (not made current). The version is claimed first (HSETNX, state
        'writing'), rows follow in pipelined MSETs per bucket, then its state becomes 'complete'."""
        self._check_started()
        check_name("table", table)
        sorted_ids, matrix = sorted_table(ids, vectors)
        version = version or datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        check_name("version", version)
        values = pack_rows(matrix, dtype, version)  # ValueError for values not finite in dtype
        meta = VersionMeta(
            dim=int(matrix.shape[1]),
            dtype=dtype,
            count=len(sorted_ids),
            buckets=buckets or self._buckets,
            created_at=datetime.now(UTC).isoformat(),
            state=STATE_WRITING,
        )
        key = versions_key(self._prefix, table)
        async with self._within(self._admin_timeout_s, table=table):
            claimed = await self._command(key, ("HSETNX", key, version, meta.to_json()))
            if not claimed:
                raise ValueError(f"version {version!r} of {table!r} already exists")
            await self._command(tables_key(self._prefix), ("SADD", tables_key(self._prefix), table))
        layout = Layout(self._prefix, table, version, meta.buckets)
        commands = []
        buckets_of = layout.bucket_of(sorted_ids)
        order = np.argsort(buckets_of, kind="stable")
        buckets_of = buckets_of[order]
        keys = layout.keys(sorted_ids[order])
        starts = np.flatnonzero(np.r_[True, buckets_of[1:] != buckets_of[:-1]])
        for start, end in zip(starts, [*starts[1:], len(order)], strict=True):
            slot = key_slot(layout.tags[int(buckets_of[start])])
            for chunk in range(int(start), int(end), _WRITE_ROWS):
                rows = range(chunk, min(chunk + _WRITE_ROWS, int(end)))
                args: list[bytes] = [b"MSET"]
                for row in rows:
                    args += (keys[row], values[int(order[row])])
                commands.append((Command(slot, pack(*args)), len(rows)))
        done = 0
        for first in range(0, len(commands), _WRITE_ROUND):
            batch = commands[first : first + _WRITE_ROUND]
            async with self._within(self._admin_timeout_s, table=table):
                self._raise_errors(await self._routing.execute([c for c, _ in batch]), table)
            done += sum(rows for _, rows in batch)
            if on_progress is not None:
                on_progress(done, len(sorted_ids))
        complete = replace(meta, state=STATE_COMPLETE)
        async with self._within(self._admin_timeout_s, table=table):
            await self._command(key, ("HSET", key, version, complete.to_json()))
        if on_progress is not None and not commands:
            on_progress(0, 0)
        return version

    async def count_present(self, table: str, version: str, ids: npt.NDArray[np.int64]) -> int:
        """EXISTS over `ids` per bucket (no values travel)."""
        self._check_started()
        query = np.asarray(ids, dtype=np.int64)
        async with self._within(self._admin_timeout_s, table=table):
            stored = await self._version(table, version, complete_only=False)
            commands = [
                Command(slot, stored.layout.pack(b"EXISTS", part))
                for slot, _, part in self._plan(stored, query, chunk=_WRITE_ROWS)
            ]
            replies = await self._routing.execute(commands)
        self._raise_errors(replies, table)
        return int(sum(replies))

    async def set_current(self, table: str, version: str) -> None:
        """One HSET of the pointer: readers switch on their next `current_versions`."""
        self._check_started()
        check_name("version", version)
        async with self._within(self._admin_timeout_s, table=table):
            await self._version(table, version)  # exists and is complete
            await self._command(self._current_key, ("HSET", self._current_key, table, version))

    async def current_version(self, table: str) -> str | None:
        self._check_started()
        async with self._within(self._admin_timeout_s, table=table):
            reply = await self._command(self._current_key, ("HGET", self._current_key, table))
        return None if reply is None else bytes(reply).decode()

    async def list_tables(self) -> list[str]:
        self._check_started()
        key = tables_key(self._prefix)
        async with self._within(self._admin_timeout_s, table=""):
            members = await self._command(key, ("SMEMBERS", key))
        return sorted(member.decode() for member in members)

    async def list_versions(self, table: str) -> list[VersionInfo]:
        self._check_started()
        key = versions_key(self._prefix, table)
        async with self._within(self._admin_timeout_s, table=table):
            flat = await self._command(key, ("HGETALL", key))
            current = await self.current_version(table)
        out = []
        for name, raw in zip(flat[::2], flat[1::2], strict=True):
            version, meta = name.decode(), VersionMeta.from_json(raw)
            info = TableInfo(name=table, version=version, dim=meta.dim, dtype=meta.dtype, count=meta.count)
            out.append(VersionInfo(info=info, created_at=meta.created_at, current=version == current, state=meta.state))
        return sorted(out, key=lambda v: (v.created_at, v.info.version))

    async def delete_version(self, table: str, version: str) -> None:
        """Mark the version 'deleting', SCAN+UNLINK its keys on every node, then drop its metadata."""
        self._check_started()
        if version == await self.current_version(table):
            raise ValueError(f"{table}@{version} is current: make another version current first")
        key = versions_key(self._prefix, table)
        async with self._within(self._admin_timeout_s, table=table):
            stored = await self._version(table, version, complete_only=False)
            doomed = replace(stored.meta, state=STATE_DELETING)
            await self._command(key, ("HSET", key, version, doomed.to_json()))
        self._versions.pop((table, version), None)
        for node in self._routing.masters():
            cursor = b"0"
            while True:
                async with self._within(self._admin_timeout_s, table=table):
                    scan = ("SCAN", cursor, "MATCH", stored.layout.scan_pattern(), "COUNT", "1000")
                    (reply,) = await self._routing.call(node, pack(*scan), 1)
                    self._raise_errors([reply], table)
                    cursor, found = reply
                    by_tag: dict[bytes, list[bytes]] = {}
                    for found_key in found:
                        by_tag.setdefault(found_key[found_key.index(b"{") : found_key.index(b"}") + 1], []).append(
                            found_key
                        )
                    unlinks = [Command(key_slot(tag), pack("UNLINK", *ks)) for tag, ks in by_tag.items()]
                    self._raise_errors(await self._routing.execute(unlinks), table)
                if cursor == b"0":
                    break
        async with self._within(self._admin_timeout_s, table=table):
            await self._command(key, ("HDEL", key, version))

    # -- request path internals ------------------------------------------------------------------------------

    async def _mget_single(self, stored: _Version, ids: npt.NDArray[np.int64]) -> list[bytes | None]:
        single = self._routing.single
        assert single is not None
        chunk = self._mget_chunk
        if len(ids) <= chunk:
            (reply,) = await self._routing.call(single, stored.layout.pack(b"MGET", ids), 1)
            self._raise_errors([reply], stored.layout.tags[0].decode())
            return cast(list[bytes | None], reply)
        payload = b"".join(stored.layout.pack(b"MGET", ids[s : s + chunk]) for s in range(0, len(ids), chunk))
        replies = await self._routing.call(single, payload, math.ceil(len(ids) / chunk))
        self._raise_errors(replies, "")
        return [value for reply in replies for value in reply]

    async def _mget_cluster(
        self, stored: _Version, ids: npt.NDArray[np.int64]
    ) -> tuple[list[bytes | None], npt.NDArray[np.int64]]:
        plan = self._plan(stored, ids, chunk=self._mget_chunk)
        replies = await self._routing.execute(
            [Command(slot, stored.layout.pack(b"MGET", part)) for slot, _, part in plan]
        )
        self._raise_errors(replies, "")
        order = np.concatenate([positions for _, positions, _ in plan])
        return [value for reply in replies for value in reply], order

    def _plan(
        self, stored: _Version, ids: npt.NDArray[np.int64], *, chunk: int
    ) -> list[tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
        """(slot, positions in `ids`, ids) per bucket and chunk: keys of one command share a slot."""
        buckets = stored.layout.bucket_of(ids)
        order = np.argsort(buckets, kind="stable")
        sorted_buckets = buckets[order]
        starts = (
            np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1]]) if len(ids) else np.zeros(0, int)
        )
        ends = [*starts[1:], len(ids)]
        plan = []
        for start, end in zip(starts, ends, strict=True):
            slot = int(stored.bucket_slots[sorted_buckets[start]])
            for first in range(int(start), int(end), chunk):
                positions = order[first : min(first + chunk, int(end))]
                plan.append((slot, positions, ids[positions]))
        return plan

    def _decode(
        self, values: list[bytes | None], stored: _Version, table: str, version: str
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        n = len(values)
        try:
            joined = b"".join(cast(list[bytes], values))  # TypeError when an id is missing (None)
        except TypeError:
            joined = b""
        if n and len(joined) == n * stored.value_length:
            # Fast path: every id found, one length: check all headers at once, convert in one go.
            rows = np.frombuffer(joined, dtype=np.uint8).reshape(n, stored.value_length)
            width = len(stored.header)
            if (rows[:, :width] == stored.header).all():
                vectors = rows[:, width:].view(stored.value_dtype).astype(lookup_dtype(stored.meta.dtype))
                return vectors, np.ones(n, dtype=np.bool_)
        return unpack_rows(values, stored.meta.dim, version, table=table, dtype=stored.meta.dtype)

    async def _version(self, table: str, version: str, *, complete_only: bool = True) -> _Version:
        cached = self._versions.get((table, version))
        if cached is not None:
            return cached
        key = versions_key(self._prefix, table)
        raw = await self._command(key, ("HGET", key, version))
        if raw is None:
            known = sorted(v.decode() for v in await self._command(key, ("HKEYS", key)))
            if not known:
                raise TableNotFound(f"no table {table!r}", store=self.name, table=table)
            raise TableNotFound(f"no version {version!r}; versions: {known}", store=self.name, table=table)
        meta = VersionMeta.from_json(raw)
        if meta.state != STATE_COMPLETE and complete_only:
            raise TableNotFound(f"version {version!r} is {meta.state}, not complete", store=self.name, table=table)
        layout = Layout(self._prefix, table, version, meta.buckets)
        head = header(meta.dtype, meta.dim, version)
        dtype = np.dtype(meta.dtype).newbyteorder("<")
        stored = _Version(
            meta=meta,
            layout=layout,
            bucket_slots=np.array([key_slot(tag) for tag in layout.tags], dtype=np.int64),
            header=np.frombuffer(head, dtype=np.uint8),
            value_dtype=dtype,
            value_length=len(head) + meta.dim * dtype.itemsize,
        )
        if meta.state == STATE_COMPLETE:
            if len(self._versions) >= _MAX_CACHED_METAS:
                self._versions.clear()
            self._versions[(table, version)] = stored
        return stored

    # -- commands and their errors ------------------------------------------------------------------------------

    async def _command(self, key: bytes, args: tuple[str | bytes, ...]) -> Any:
        """One command about `key`, routed to its slot's node; error replies raise StoreError."""
        (reply,) = await self._routing.execute([Command(key_slot(key), pack(*args))])
        self._raise_errors([reply], "")
        return reply

    def _raise_errors(self, replies: Iterable[Any], table: str) -> None:
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                kind = (
                    StoreUnavailable
                    if message.startswith(("LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN"))
                    else StoreError
                )
                raise kind(f"redis replied: {message}", store=self.name, table=table)

    def _check_started(self) -> None:
        if not self._started:
            raise StoreUnavailable("store is not started", store=self.name)


if TYPE_CHECKING:  # mypy proves the protocols are met, so drift fails CI rather than a caller
    _store: type[EmbeddingStore] = RedisStore
    _admin: type[TableAdmin] = RedisStore
