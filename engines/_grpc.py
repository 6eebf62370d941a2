"""What the gRPC engines (Triton, TF Serving) share: channel options and the status -> engine error table."""

from __future__ import annotations

import grpc

from engines.errors import (
    BadInput,
    EngineError,
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    ModelNotFound,
)

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A restarted server is found again within a second or two, not after gRPC's default 2-minute backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
)

_BY_CODE: dict[grpc.StatusCode, type[EngineError]] = {
    grpc.StatusCode.UNAVAILABLE: EngineUnavailable,
    grpc.StatusCode.NOT_FOUND: ModelNotFound,
    grpc.StatusCode.INVALID_ARGUMENT: BadInput,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EngineOverloaded,
    # Our channel closed under the call (our own task's cancellation re-raises instead).
    grpc.StatusCode.CANCELLED: EngineUnavailable,
}


def engine_error(error: grpc.aio.AioRpcError, timeout_s: float | None, *, target: str, model: str) -> EngineError:
    """The engine error for a failed backend call: UNAVAILABLE and CANCELLED -> EngineUnavailable,
    DEADLINE_EXCEEDED -> EngineTimeout, NOT_FOUND -> ModelNotFound, INVALID_ARGUMENT -> BadInput,
    RESOURCE_EXHAUSTED -> EngineOverloaded, anything else -> EngineError; the message keeps the status."""
    code = error.code()
    message = f"{code.name}: {error.details() or ''}"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return EngineTimeout(f"no answer within {timeout_s}s ({message})", target=target, model=model)
    return _BY_CODE.get(code, EngineError)(message, target=target, model=model)
