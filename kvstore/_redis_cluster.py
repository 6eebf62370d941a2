"""Where a Redis command goes: the one server, or the node that owns its slot in a Redis Cluster.

`Routing` holds a connection pool per node (`kvstore._redis_wire.NodePool`) and the topology learned at
`start()` with CLUSTER SLOTS: a server that answers "cluster support disabled" is a single server, any other
answer is a cluster's slot map. `execute` sends a batch of commands pipelined per node, nodes concurrently,
and follows redirects: MOVED refreshes the slot map (once per batch) and resends the command to the new
owner; ASK resends it once, after ASKING, to the node named. What a command means, and which error replies
are failures, is the store's business (`kvstore.redis`); routing only raises `StoreUnavailable` for a node it
cannot reach or a cluster that does not cover every slot.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import hiredis

from kvstore._redis_wire import NodePool, RedisAddress, Unreachable, pack, tls_context
from kvstore.errors import StoreUnavailable

if TYPE_CHECKING:
    from kvstore.config import RedisTlsConfig

SLOTS = 16384


@dataclass
class Command:
    """One packed command and the cluster slot of the keys it names (None: any node will do)."""

    slot: int | None
    payload: bytes


class Routing:
    """The nodes of one Redis deployment, their pools, and which node answers which slot."""

    def __init__(
        self,
        address: RedisAddress,
        *,
        store: str,
        pool_size: int,
        connect_timeout_s: float,
        tls: RedisTlsConfig | None,
    ) -> None:
        self.address = address
        self._store = store  # the store's name, for errors
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._tls_config = tls
        self._tls: ssl.SSLContext | None = None  # built at start (it reads files)
        self._pools: dict[tuple[str, int], NodePool] = {}
        self._single: NodePool | None = None  # set when the server is not a cluster
        self._slots: list[NodePool] = []  # cluster: owner of each slot

    @property
    def single(self) -> NodePool | None:
        """The server's pool when it is not a cluster (the request path's shortcut); None on a cluster."""
        return self._single

    @property
    def cluster(self) -> bool:
        return self._single is None and bool(self._slots)

    def connections(self) -> dict[str, tuple[int, int]]:
        """node -> (idle connections, connections lent out now)."""
        return {repr(pool): (pool.idle, pool.busy) for pool in self._pools.values()}

    async def start(self, timeout_s: float) -> None:
        """Learn the topology from the address's node within `timeout_s`.

        Raises `StoreUnavailable` when it cannot be reached or refuses, `ValueError` for a TLS file that
        cannot be used or a database other than 0 on a cluster.
        """
        if self.address.tls and self._tls is None:
            self._tls = tls_context(self._tls_config)
        seed = self._pool(self.address.host, self.address.port)
        try:
            async with asyncio.timeout(timeout_s):
                (reply,) = await seed.call(pack("CLUSTER", "SLOTS"), 1)
        except (TimeoutError, Unreachable) as error:
            self.close()
            raise StoreUnavailable(f"cannot reach {self.address}: {error}", store=self._store) from error
        try:
            if isinstance(reply, hiredis.ReplyError):
                if "cluster support disabled" not in str(reply):
                    raise StoreUnavailable(f"{self.address}: {reply}", store=self._store)
                self._single = seed
            else:
                if self.address.db:
                    raise ValueError(f"{self.address}: a cluster has only database 0")
                self._set_slots(reply)
        except BaseException:
            self.close()
            raise

    async def execute(self, commands: list[Command]) -> list[Any]:
        """Replies to `commands` in order: pipelined per node, nodes concurrently, redirects followed."""
        if self._single is not None:
            payload = b"".join(c.payload for c in commands)
            return await self.call(self._single, payload, len(commands))
        groups: dict[NodePool, list[int]] = {}
        for index, command in enumerate(commands):
            groups.setdefault(self._owner(command.slot), []).append(index)
        replies: list[Any] = [None] * len(commands)

        async def on_node(node: NodePool, indexes: list[int]) -> None:
            answered = await self.call(node, b"".join(commands[i].payload for i in indexes), len(indexes))
            for i, reply in zip(indexes, answered, strict=True):
                replies[i] = reply

        if len(groups) == 1:
            ((node, indexes),) = groups.items()
            await on_node(node, indexes)
        else:
            outcomes = await asyncio.gather(*(on_node(n, i) for n, i in groups.items()), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        refreshed = False
        for index, reply in enumerate(replies):
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith(("MOVED ", "ASK ")):
                kind, _, where = str(reply).split(" ")
                host, _, port = where.rpartition(":")
                target = self._pool(host or self.address.host, int(port))
                if kind == "MOVED":
                    if not refreshed:
                        await self._refresh_slots()
                        refreshed = True
                    (replies[index],) = await self.call(target, commands[index].payload, 1)
                else:
                    asking = pack("ASKING") + commands[index].payload
                    replies[index] = (await self.call(target, asking, 2))[1]
        return replies

    async def call(self, node: NodePool, payload: bytes, n: int) -> list[Any]:
        """`n` replies from `node` to `payload`; a node that cannot be reached is `StoreUnavailable`."""
        try:
            return await node.call(payload, n)
        except Unreachable as error:
            raise StoreUnavailable(str(error), store=self._store) from error

    def masters(self) -> list[NodePool]:
        """Every node that owns slots (the server itself when it is not a cluster)."""
        if self._single is not None:
            return [self._single]
        return list(dict.fromkeys(self._slots))

    def _pool(self, host: str, port: int) -> NodePool:
        """The pool of node `host:port`, made on first use."""
        pool = self._pools.get((host, port))
        if pool is None:
            pool = NodePool(
                host,
                port,
                self.address,
                size=self._pool_size,
                connect_timeout_s=self._connect_timeout_s,
                tls=self._tls,
                server_name=self._tls_config.server_name if self._tls_config is not None else None,
            )
            self._pools[(host, port)] = pool
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._single = None
        self._slots = []

    def _owner(self, slot: int | None) -> NodePool:
        if self._single is not None or slot is None:
            return self._single or self._pool(self.address.host, self.address.port)
        return self._slots[slot]

    async def _refresh_slots(self) -> None:
        for node in [*self.masters(), self._pool(self.address.host, self.address.port)]:
            try:
                (reply,) = await node.call(pack("CLUSTER", "SLOTS"), 1)
            except Unreachable:
                continue
            if not isinstance(reply, hiredis.ReplyError):
                self._set_slots(reply)
                return
        raise StoreUnavailable("no cluster node answered CLUSTER SLOTS", store=self._store)

    def _set_slots(self, reply: list[Any]) -> None:
        owners: list[NodePool | None] = [None] * SLOTS
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if primary[0] else self.address.host
            node = self._pool(host, int(primary[1]))
            owners[start : end + 1] = [node] * (end - start + 1)
        if any(owner is None for owner in owners):
            raise StoreUnavailable("the cluster does not cover every slot", store=self._store)
        self._slots = cast(list[NodePool], owners)
