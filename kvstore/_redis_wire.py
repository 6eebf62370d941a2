"""Redis's wire protocol for the stores: addresses (redis:// and rediss://, credentials kept out of reprs),
TLS contexts, one connection as an asyncio protocol feeding `hiredis.Reader`, and a node's blocking pool
of them (a connection that did not read its request's last reply is closed, never reused).

Split out of `kvstore.redis` (the store and its cluster routing) so other stores speaking to Redis (Feast's
online store layout) share one connection layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

import hiredis

from kvstore.errors import StoreError, StoreTimeout

if TYPE_CHECKING:
    from kvstore.config import RedisTlsConfig


class Unreachable(ConnectionError):
    """A node could not be reached or dropped the connection, after the one retry."""


@dataclass(frozen=True)
class RedisAddress:
    """Where a store connects; `tls` from the `rediss://` scheme. The password never appears in repr or str."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(repr=False)
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """`redis[s]://[[user]:password@]host[:port][/db]` (rediss: TLS); ValueError otherwise, without the
        password in its message."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"expected a redis://host:port/db URL (rediss:// for TLS), got {redact_url(url)!r}")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the database in {redact_url(url)!r} must be a number")
        try:
            port = parts.port or 6379
        except ValueError as error:
            raise ValueError(f"bad port in {redact_url(url)!r}: {error}") from None
        return cls(
            host=parts.hostname or "localhost",
            port=port,
            db=int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "rediss",
        )

    def __str__(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


def redact_url(url: str) -> str:
    """`url` with its password (if any) replaced by `***`, for messages, logs and reprs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def tls_context(tls: RedisTlsConfig | None) -> ssl.SSLContext:
    """A client context verifying the server against `tls.ca_file` (None: the system's roots), with the
    client certificate when one is given. Reads the files: ValueError naming the one that fails."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls is None:
        return context
    try:
        if tls.ca_file is not None:
            context.load_verify_locations(cafile=str(tls.ca_file))
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as error:
        files = [str(f) for f in (tls.ca_file, tls.cert_file, tls.key_file) if f is not None]
        raise ValueError(f"redis tls files {files} cannot be used: {error}") from None
    return context


# -- one connection -------------------------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One socket carrying one request at a time: `roundtrip` writes a packed payload and returns its
    `n` replies, parsed by hiredis straight from `data_received`. Error replies come back as
    `hiredis.ReplyError` values. Anything off the request/reply rhythm marks it `broken`."""

    def __init__(self) -> None:
        self._parser = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[list[Any]] | None = None
        self._expected = 0
        self._replies: list[Any] = []
        self.broken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # a reply nobody waits for: never reuse this socket
            self.abort()
            return
        try:
            self._parser.feed(data)
            replies = self._replies
            while (reply := self._parser.gets()) is not False:
                replies.append(reply)
                if len(replies) == self._expected:
                    self._waiter = None
                    waiter.set_result(replies)
                    return
        except hiredis.ProtocolError as error:
            self.abort()
            waiter.set_exception(ConnectionError(f"protocol error: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"connection lost: {exc or 'closed by the server'}"))

    async def roundtrip(self, payload: bytes, n: int) -> list[Any]:
        if self.broken or self._transport is None or self._waiter is not None:
            raise ConnectionError("connection is not usable")
        waiter: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiter, self._expected, self._replies = waiter, n, []
        self._transport.write(payload)
        return await waiter

    def abort(self) -> None:
        self.broken = True
        if self._transport is not None:
            self._transport.abort()


# -- one node --------------------------------------------------------------------------------------------


class NodePool:
    """A blocking pool of at most `size` connections to one node."""

    def __init__(
        self,
        host: str,
        port: int,
        address: RedisAddress,
        *,
        size: int,
        connect_timeout_s: float,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._address = address
        self._tls = tls
        self._server_name = server_name
        self._connect_timeout_s = connect_timeout_s
        self._free = asyncio.Semaphore(size)
        self._idle: list[Connection] = []
        self._closed = False
        self.busy = 0  # connections lent out now

    def __repr__(self) -> str:
        return f"{self.host}:{self.port}"

    async def call(self, payload: bytes, n: int) -> list[Any]:
        """The `n` replies to `payload`; one retry on a connection error, then `Unreachable`."""
        error: Exception | None = None
        for _ in range(2):
            async with self._free:
                conn = self._take_idle()
                done = False
                self.busy += 1
                try:
                    if conn is None:
                        conn = await self._connect()
                    replies = await conn.roundtrip(payload, n)
                    done = True
                    return replies
                except (ConnectionError, OSError) as failed:
                    error = failed
                    self._drop_idle()  # likely as stale as this one (a restarted server): retry on a new one
                finally:
                    self.busy -= 1
                    self._give_back(conn, reusable=done)
        raise Unreachable(f"{self}: {error}") from error

    @property
    def idle(self) -> int:
        return sum(not conn.broken for conn in self._idle)

    def close(self) -> None:
        self._closed = True
        self._drop_idle()

    def _drop_idle(self) -> None:
        while self._idle:
            self._idle.pop().abort()

    def _take_idle(self) -> Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.broken:
                return conn
        return None

    def _give_back(self, conn: Connection | None, *, reusable: bool) -> None:
        # Synchronous on purpose: runs in `finally` even while the caller is being cancelled.
        if conn is None:
            return
        if reusable and not conn.broken and not self._closed:
            self._idle.append(conn)
        else:
            conn.abort()

    async def _connect(self) -> Connection:
        if self._closed:
            raise ConnectionError("store is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s) as scope:
                if self._tls is None:
                    _, conn = await loop.create_connection(Connection, self.host, self.port)
                else:
                    _, conn = await loop.create_connection(
                        Connection,
                        self.host,
                        self.port,
                        ssl=self._tls,
                        server_hostname=self._server_name or self.host,
                        ssl_handshake_timeout=self._connect_timeout_s,
                    )
        except TimeoutError:
            if scope.expired():
                raise ConnectionError(f"no connection within {self._connect_timeout_s}s") from None
            raise
        try:
            setup: list[tuple[str, ...]] = []
            user = self._address.username
            if self._address.password is not None:
                setup.append(("AUTH", user, self._address.password) if user else ("AUTH", self._address.password))
            if self._address.db:
                setup.append(("SELECT", str(self._address.db)))
            if setup:
                replies = await conn.roundtrip(b"".join(pack(*c) for c in setup), len(setup))
                failed = [(c[0], r) for c, r in zip(setup, replies, strict=True) if isinstance(r, hiredis.ReplyError)]
                if failed:
                    step, reply = failed[0]
                    # Redis's own reply names no secret; the command sent (with the password) is never echoed.
                    what = f"authentication as user {user or 'default'!r}" if step == "AUTH" else step
                    raise ConnectionError(f"{what} refused: {reply}")
        except BaseException:
            conn.abort()
            raise
        return conn


def pack(*args: str | bytes) -> bytes:
    # hiredis's stub types the argument as a 1-tuple; any tuple of str/bytes is what it takes.
    return cast(bytes, hiredis.pack_command(cast(Any, args)))


@contextlib.asynccontextmanager
async def deadline(limit_s: float | None, *, store: str, table: str) -> AsyncIterator[None]:
    """One call of a Redis-backed store under `limit_s`: past it `StoreTimeout`; a `StoreError` raised
    inside gets the store's and table's names where it has none."""
    try:
        async with asyncio.timeout(limit_s) as scope:
            yield
    except TimeoutError:
        if scope.expired():
            raise StoreTimeout(f"not done within {(limit_s or 0.0) * 1000:.0f} ms", store=store, table=table) from None
        raise
    except StoreError as error:
        error.store = error.store or store
        error.table = error.table or table
        raise
