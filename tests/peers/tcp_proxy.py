"""A TCP forwarder in front of a peer, so a test can take a shared server "down" for one client only.

proxy = await TcpProxy.start("127.0.0.1", peer_port)   # listens on 127.0.0.1:<proxy.port>
...                                                    # clients of proxy.url reach the peer
await proxy.cut()                                      # listener closed, live connections reset
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, server: asyncio.Server, target_host: str, target_port: int) -> None:
        self._server = server
        self._target = (target_host, target_port)
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, target_host: str, target_port: int) -> TcpProxy:
        proxy: TcpProxy | None = None

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert proxy is not None
            await proxy._forward(reader, writer)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        proxy = cls(server, target_host, target_port)
        return proxy

    @property
    def port(self) -> int:
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def cut(self) -> None:
        """Stop accepting and drop every connection: the target looks down from here on."""
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, upstream_writer}
        pumps = [
            asyncio.create_task(_pump(client_reader, upstream_writer)),
            asyncio.create_task(_pump(upstream_reader, client_writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                writer.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
