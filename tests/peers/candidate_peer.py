"""A CandidateService peer whose answers tests choose, per calling source, to test a client's handling.

    async with running_candidate_peer({"dupes": Reply(item_ids=[1, 1])}) as peer:
        peer.target                       # '127.0.0.1:PORT'
        peer.calls[-1].time_remaining_s   # the deadline the server saw on the last call

It answers whatever it is told, contract or not (that is its point); the reference implementation is
`quasar.candidate_server`. It runs in the test's own event loop, so tests can wait on its events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from quasar.v1 import candidates_pb2, candidates_pb2_grpc


@dataclass(frozen=True)
class Reply:
    """What the peer does for one source: wait for `release` first when `hold`, then fail with `status`
    (and `details`) when set, else answer `item_ids`/`scores`/`version` as they are."""

    item_ids: Sequence[int] = (101, 102, 103)
    scores: Sequence[float] = ()
    version: str = "peer-v1"
    hold: bool = False
    status: grpc.StatusCode | None = None
    details: str = ""


@dataclass(frozen=True)
class Call:
    request: candidates_pb2.RetrieveRequest
    time_remaining_s: float | None  # as the handler saw it on entry; None: the call had no deadline
    metadata: tuple[tuple[str, str | bytes], ...]


@dataclass
class CandidatePeer(candidates_pb2_grpc.CandidateServiceServicer):
    """`replies` by source name (`default` for the others). `entered` is set when a call arrives,
    `cancelled` when a held call is cancelled (by its caller or its deadline); `release` lets held
    calls go on."""

    replies: Mapping[str, Reply]
    default: Reply = Reply()
    calls: list[Call] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def Retrieve(
        self, request: candidates_pb2.RetrieveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> candidates_pb2.RetrieveResponse:
        self.calls.append(Call(request, context.time_remaining(), tuple(context.invocation_metadata() or ())))
        self.entered.set()
        reply = self.replies.get(request.source, self.default)
        if reply.hold:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if reply.status is not None:
            await context.abort(reply.status, reply.details)
        return candidates_pb2.RetrieveResponse(
            item_ids=list(reply.item_ids), scores=list(reply.scores), version=reply.version
        )


@dataclass
class RunningPeer:
    peer: CandidatePeer
    server: grpc.aio.Server
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@asynccontextmanager
async def running_candidate_peer(replies: Mapping[str, Reply] | None = None) -> AsyncIterator[RunningPeer]:
    """The peer on 127.0.0.1, port 0; stopped (held calls released, then cancelled) on exit."""
    peer = CandidatePeer(dict(replies or {}))
    server = grpc.aio.server()
    candidates_pb2_grpc.add_CandidateServiceServicer_to_server(peer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield RunningPeer(peer, server, port)
    finally:
        peer.release.set()
        await server.stop(None)
