"""Server interceptors, composed once when the server is created."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from gateway.metrics import GatewayMetrics


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every unary RPC with the conventional grpc_server_* metric names."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        # method -> (the service's handler, its observed wrapper): built once per method, not per call
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._observe(handler_call_details.method, handler)
        self._wrapped[handler_call_details.method] = (handler, wrapped)
        return wrapped

    def _observe(self, full_method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        service, _, method = full_method.lstrip("/").rpartition("/")
        labels = ("unary", service, method)
        inner = handler.unary_unary
        metrics = self._metrics
        started_total = metrics.grpc_started.labels(*labels)
        handling_seconds = metrics.grpc_handling.labels(*labels)

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started_total.inc()
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await inner(request, context)  # type: ignore[arg-type,misc]
                code = context.code() or grpc.StatusCode.OK
                return response
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                handling_seconds.observe(time.perf_counter() - started)
                metrics.grpc_handled.labels(*labels, _code_name(code)).inc()

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    return grpc.StatusCode(code).name if code is not None else "UNKNOWN"
