"""Request bodies that do not decode answer INVALID_ARGUMENT naming the problem, on every service.

Left alone, grpc's aio server answers a body its deserializer refuses with UNKNOWN and the detail
"Unexpected <class '...DecodeError'>: ...", and logs each one at ERROR with a traceback, so any client
could flood the log. `DecodeGuard` is a server interceptor, composed once at startup, that gives every
method a deserializer which hands the method an `Undecodable` value instead of raising, and a behaviour
that answers it through the server's one abort path, with a rate-limited warning in the log.
Oversized bodies never get this far: grpc refuses them with RESOURCE_EXHAUSTED (see `GatewayServer`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError

from gateway.rate_limited_log import RateLimitedLog
from gateway.status import Aborter, invalid_argument
from gateway.wire_problem import wire_problem

if TYPE_CHECKING:  # grpc's classes are generic only in its stubs
    Handler = grpc.RpcMethodHandler[Any, Any]


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request message that could not be decoded; never reaches a servicer."""

    message_type: str
    problem: str | None

    @property
    def detail(self) -> str:
        """The status detail: what was expected and, when the wire walk found it, what is wrong."""
        problem = f": {self.problem}" if self.problem else ""
        return f"request body is not a valid {self.message_type} message{problem}"


def guard_deserializer(deserializer: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    """`deserializer`, returning `Undecodable` where it would raise DecodeError."""
    descriptor = _descriptor_of(deserializer)
    message_type = descriptor.full_name if descriptor is not None else f"request message for {method}"

    def deserialize(body: bytes) -> Any:
        try:
            return deserializer(body)
        except DecodeError:
            return Undecodable(message_type, wire_problem(descriptor, body))

    return deserialize


class DecodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Guards every method's request deserializer. Put it last in the server's interceptors (nearest
    the services), so the handlers other interceptors wrap already carry the guarded deserializer.

    An undecodable body answers INVALID_ARGUMENT with `Undecodable.detail` through `aborter`, and logs
    one WARNING per method per interval through `warnings` (with a count of those suppressed).
    """

    def __init__(self, aborter: Aborter, warnings: RateLimitedLog) -> None:
        self._aborter = aborter
        self._warnings = warnings
        # method -> (the service's handler, its guarded wrapper): built once per method, not per call
        self._guarded: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler  # no such method (grpc answers UNIMPLEMENTED), or raw bytes: nothing to decode
        method = handler_call_details.method
        cached = self._guarded.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        guarded = self._guard(method, handler, handler.request_deserializer)
        self._guarded[method] = (handler, guarded)
        return guarded

    def _guard(self, method: str, handler: Handler, request_deserializer: Callable[[bytes], Any]) -> Handler:
        deserializer = guard_deserializer(request_deserializer, method)
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            behavior = self._unary_request(method, handler.unary_unary)
            return grpc.unary_unary_rpc_method_handler(behavior, deserializer, serializer)
        if handler.unary_stream is not None:
            behavior = self._unary_request(method, handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(behavior, deserializer, serializer)
        if handler.stream_unary is not None:
            behavior = self._stream_request(method, handler.stream_unary)
            return grpc.stream_unary_rpc_method_handler(behavior, deserializer, serializer)
        behavior = self._stream_request(method, handler.stream_stream)
        return grpc.stream_stream_rpc_method_handler(behavior, deserializer, serializer)

    async def _refuse(self, context: grpc.aio.ServicerContext[Any, Any], method: str, request: Undecodable) -> None:
        self._warnings.warning(
            f"undecodable:{method}",
            f"refused an undecodable request body on {method}",
            extra={"method": method, "problem": request.detail},
        )
        await self._aborter.abort(context, invalid_argument(request.detail), method=method)

    def _unary_request(self, method: str, inner: Any) -> Any:
        """The same kind of callable as `inner` (grpc dispatches on it): coroutine or async generator."""
        if inspect.isasyncgenfunction(inner):

            async def streamed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                if isinstance(request, Undecodable):
                    await self._refuse(context, method, request)
                async for response in inner(request, context):
                    yield response

            return streamed

        if inspect.iscoroutinefunction(inner):

            async def answered(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if isinstance(request, Undecodable):
                    await self._refuse(context, method, request)
                return await inner(request, context)

            return answered
        return inner  # a synchronous handler: not served by this aio server

    def _stream_request(self, method: str, inner: Any) -> Any:
        """Same kind as `inner`; the request stream it reads is checked message by message."""

        async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async for request in requests:
                if isinstance(request, Undecodable):
                    await self._refuse(context, method, request)
                yield request

        if inspect.isasyncgenfunction(inner):

            async def streamed(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                async for response in inner(checked(requests, context), context):
                    yield response

            return streamed
        if inspect.iscoroutinefunction(inner):

            async def answered(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                return await inner(checked(requests, context), context)

            return answered
        return inner


def _descriptor_of(deserializer: Callable[[bytes], Any]) -> Descriptor | None:
    """The message descriptor behind a generated `Message.FromString`, when that is what it is."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return descriptor if isinstance(descriptor, Descriptor) else None
