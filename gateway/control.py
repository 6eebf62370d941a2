"""The control channel between the supervisor of `quasar serve --workers N` and each worker process.

One Unix stream socket per worker, JSON objects one per line (orjson), requests answered by id in both
directions: a worker asks the supervisor (`ready`, `set_routes`), the supervisor asks every worker
(`check_routes`, `swap_routes`). Nothing here knows what the operations mean: each side passes a handler.

A request's answer is `{"reply_to": id, "ok": true, ...}` or `{"reply_to": id, "ok": false, "code": ...,
"message": ...}`; `ControlError` carries a failed answer's code (a gRPC status name in lower case) and
message to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

log = logging.getLogger(__name__)

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[Message]]

# A route table is a few KB; a line far above that is not ours.
_MAX_LINE_BYTES = 16 * 1024 * 1024


class ControlError(Exception):
    """A request the other side answered with `ok: false` (or could not answer: code `unavailable`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ControlChannel:
    """Requests both ways over one connection. `serve()` reads until the peer closes, answering the peer's
    requests with `handler` (one task each) and resolving the answers to ours; pending requests fail with
    `ControlError("unavailable", ...)` once the connection is gone."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
        self._reader = reader
        self._writer = writer
        self._handler = handler
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    async def connect(cls, path: str, handler: Handler) -> ControlChannel:
        reader, writer = await asyncio.open_unix_connection(path, limit=_MAX_LINE_BYTES)
        return cls(reader, writer, handler)

    async def request(self, message: Message, *, timeout_s: float | None = None) -> Message:
        """Send `message` (an `op` and its fields) and return the peer's successful answer; raises
        `ControlError` for a failed one, or when the connection closes or `timeout_s` passes first."""
        if self._closed:
            raise ControlError("unavailable", "the control connection is closed")
        request_id = next(self._ids)
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            await self._send({**message, "id": request_id})
            async with asyncio.timeout(timeout_s):
                reply = await answer
        except TimeoutError:
            raise ControlError("deadline_exceeded", f"no answer to {message.get('op')!r} in {timeout_s} s") from None
        finally:
            self._pending.pop(request_id, None)
        if not reply.get("ok"):
            raise ControlError(str(reply.get("code", "internal")), str(reply.get("message", "failed")))
        return reply

    async def serve(self) -> None:
        try:
            while line := await self._reader.readline():
                try:
                    message = orjson.loads(line)
                except orjson.JSONDecodeError:
                    log.error("control channel: an undecodable line was dropped")
                    continue
                if "reply_to" in message:
                    waiting = self._pending.get(message["reply_to"])
                    if waiting is not None and not waiting.done():
                        waiting.set_result(message)
                    continue
                task = asyncio.get_running_loop().create_task(self._answer(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as error:
            log.warning("control channel: connection lost (%s)", error)
        finally:
            self._closed = True
            for waiting in self._pending.values():
                if not waiting.done():
                    waiting.set_exception(ControlError("unavailable", "the control connection closed"))

    async def close(self) -> None:
        self._closed = True
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def _answer(self, message: Message) -> None:
        try:
            reply = {"ok": True, **(await self._handler(message))}
        except ControlError as error:
            reply = {"ok": False, "code": error.code, "message": error.message}
        except Exception as error:  # a handler's bug: answered, never left hanging
            log.exception("control channel: %r failed", message.get("op"))
            reply = {"ok": False, "code": "internal", "message": f"{message.get('op')} failed: {error}"}
        with contextlib.suppress(ConnectionError):
            await self._send({**reply, "reply_to": message.get("id")})

    async def _send(self, message: Message) -> None:
        self._writer.write(orjson.dumps(message) + b"\n")
        await self._writer.drain()
