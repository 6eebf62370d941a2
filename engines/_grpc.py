"""What the gRPC engines (Triton, TF Serving) share: channels (plaintext or TLS), their options, and the
status -> engine error table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from engines.errors import (
    BadInput,
    EngineError,
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    ModelNotFound,
)

if TYPE_CHECKING:
    from engines.tls_config import GrpcTlsConfig

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


def open_channel(url: str, tls: GrpcTlsConfig | None, *, engine: str) -> grpc.aio.Channel:
    """A channel to `url` with `CHANNEL_OPTIONS`: plaintext when `tls` is None, else TLS (mutual when it
    names a client certificate). Reads the TLS files now: ValueError naming the engine and the file
    when one cannot be read (a startup error, not a failed call later)."""
    if tls is None:
        return grpc.aio.insecure_channel(url, options=CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "ca_file", engine),
        private_key=_read(tls.key_file, "key_file", engine),
        certificate_chain=_read(tls.cert_file, "cert_file", engine),
    )
    options: tuple[tuple[str, int | str], ...] = CHANNEL_OPTIONS
    if tls.server_name_override is not None:
        options = (*options, ("grpc.ssl_target_name_override", tls.server_name_override))
    return grpc.aio.secure_channel(url, credentials, options=options)


def _read(path: Path | None, setting: str, engine: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"engine {engine!r}: tls.{setting} {path} cannot be read: {error.strerror or error}") from None
