"""Fuzzing against real gateways: each runs on its own event loop in a thread, so hypothesis's synchronous
tests call it through ordinary blocking gRPC channels, and its log is collected for the whole session."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.server import GatewayServer
from gateway.settings import GatewaySettings

TOKEN = "fuzz-admin-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)

# Every status a hostile client may get. INTERNAL and UNKNOWN mean the gateway broke (or leaked).
ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
    }
)
# Internals that must never reach a client: tracebacks, class reprs, source files, exception class names.
_LEAK = re.compile(r"Traceback|<class|\.py\b|/work/|site-packages|\b[A-Z]\w*(?:Error|Exception)\b|Unexpected <")


class LogCollector(logging.Handler):
    """Keeps every record at WARNING and above, from every thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def problems(self) -> list[str]:
        """Records that must not be: ERROR and above, or any with a traceback — except grpc.aio's own
        process-wide poller handing an event to a loop another test already closed (asyncio logs "Event loop
        is closed" from `PollerCompletionQueue._handle_events`): that is the test process, not the gateway."""
        with self._lock_records:
            return [
                f"{r.levelname} {r.name}: {r.getMessage()}"
                for r in self.records
                if (r.levelno >= logging.ERROR or r.exc_info is not None or "Traceback" in r.getMessage())
                and not _closed_loop_noise(r)
            ]


def _closed_loop_noise(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return (
        record.name == "asyncio"
        and "PollerCompletionQueue._handle_events" in record.getMessage()
        and isinstance(error, RuntimeError)
        and str(error) == "Event loop is closed"
    )


@dataclass
class ThreadedGateway:
    server: GatewayServer
    channel: grpc.Channel
    logs: LogCollector
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread

    def raw(self, method: str, body: bytes, *, timeout_s: float = 10.0) -> tuple[grpc.StatusCode, str]:
        """Send `body` as it is to `method`; the status code and detail that came back."""
        try:
            self.channel.unary_unary(method)(body, metadata=AUTH, timeout=timeout_s)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return grpc.StatusCode.OK, ""

    def call(self, stub_method: Any, request: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str, Any]:
        """A generated-stub call; the status code, detail and (when OK) the response."""
        try:
            return grpc.StatusCode.OK, "", stub_method(request, timeout=10.0, **kwargs)
        except grpc.RpcError as error:
            return error.code(), error.details() or "", None

    def assert_serving(self) -> None:
        reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def stop(self) -> None:
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.server.drain_and_stop(), self._loop).result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


def assert_clean(code: grpc.StatusCode, detail: str, echoed: Iterable[str] = ()) -> None:
    """`code` is one a client may get and `detail` leaks nothing (once the client's own strings, which
    messages quote back, are taken out)."""
    assert code in ALLOWED, f"{code.name}: {detail}"
    for text in sorted(echoed, key=len, reverse=True):
        if text:
            detail = detail.replace(repr(text), "").replace(text, "")
    assert not _LEAK.search(detail), f"internals leaked: {detail!r}"


def start_threaded(world: Path, **overrides: Any) -> ThreadedGateway:
    """A gateway over `world` with the built-in workflows, serving on its own loop in a new thread."""
    logs = LogCollector()
    logging.getLogger().addHandler(logs)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-gateway", daemon=True)
    thread.start()
    settings = GatewaySettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        world_dir=world,
        use_uvloop=False,
        admin_token=TOKEN,
        access_log=False,
        **overrides,
    )
    server = GatewayServer(settings)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=120)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return ThreadedGateway(server, channel, logs, loop, thread)


@pytest.fixture(scope="session")
def fuzz_gateway(small_world: Path) -> Iterator[ThreadedGateway]:
    """One gateway for the read-only fuzzing (GetFeed, ModelInfer, random bytes)."""
    running = start_threaded(small_world)
    yield running
    logging.getLogger().removeHandler(running.logs)
    running.stop()
