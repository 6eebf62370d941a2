"""A bare grpc.aio pass-through proxy for `inference.GRPCInferenceService`: the floor for any Python gRPC gateway.

Usage: python benchmarks/grpc_passthrough_proxy.py UPSTREAM_HOST:PORT [--port 0]

Every call is forwarded as opaque bytes (no protobuf parsing, routing, checks or metrics) on one
long-lived channel, on uvloop as the gateway runs. `benchmarks/oip_overhead.py` measures it next to
Triton and Quasar, so the cost of one extra Python gRPC hop on the machine at hand is in the same run.
Prints `listening on HOST:PORT` once serving.
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc
import uvloop

SERVICE = "inference.GRPCInferenceService"
_CHANNEL_ARGS = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)]


class PassThrough(grpc.GenericRpcHandler):
    """Forwards every unary method of SERVICE; the handlers are built once per method."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if not method.startswith(f"/{SERVICE}/"):
            return None
        if method not in self._handlers:
            upstream = self._channel.unary_unary(method)  # no serializers: bytes in, bytes out

            async def forward(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
                return bytes(await upstream(request, timeout=context.time_remaining()))

            self._handlers[method] = grpc.unary_unary_rpc_method_handler(forward)
        return self._handlers[method]


async def serve(upstream: str, port: int) -> None:
    channel = grpc.aio.insecure_channel(upstream, options=_CHANNEL_ARGS)
    server = grpc.aio.server(options=_CHANNEL_ARGS)
    server.add_generic_rpc_handlers((PassThrough(channel),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("upstream", help="host:port of the gRPC server to forward to")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.upstream, args.port))


if __name__ == "__main__":
    main()
