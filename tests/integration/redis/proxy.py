"""A TCP proxy in front of Redis that can withhold replies, to catch requests mid-flight deterministically.

While `holding`, each reply chunk from the server is split: its first half reaches the client at once (so
a client is caught with a partial reply in its parser), the rest waits for `release()`. `held(n)` waits
until n connections are caught that way: tests wait on that event, never on time.
"""

from __future__ import annotations

import asyncio
import contextlib


class HoldingProxy:
    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._released = asyncio.Event()
        self._caught = 0
        self._caught_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.holding = False
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> HoldingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def hold(self) -> None:
        self.holding, self._caught = True, 0
        self._released.clear()

    def release(self) -> None:
        self.holding = False
        self._released.set()

    async def held(self, connections: int) -> None:
        while self._caught < connections:
            self._caught_changed.clear()
            await self._caught_changed.wait()

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        up = asyncio.create_task(self._pump(client_reader, server_writer, hold=False))
        down = asyncio.create_task(self._pump(server_reader, client_writer, hold=True))
        self._tasks |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            for writer in (client_writer, server_writer):
                writer.close()
            self._tasks -= {up, down}

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, hold: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if hold and self.holding:
                    half = max(1, len(data) // 2)
                    writer.write(data[:half])
                    await writer.drain()
                    self._caught += 1
                    self._caught_changed.set()
                    await self._released.wait()
                    data = data[half:]
                writer.write(data)
                await writer.drain()
