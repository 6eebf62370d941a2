"""The client of a remote candidate service (`quasar.v1.CandidateService/Retrieve`) over one grpc.aio channel.

It lives in engines/ so that remix, which must not import grpc, gets it injected through a structural
protocol with the same `retrieve` signature.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import grpc
import numpy as np
import numpy.typing as npt

from engines._grpc import CHANNEL_OPTIONS, engine_error, open_channel
from engines.errors import BadInput, BadOutput, EngineTimeout, EngineUnavailable
from engines.tls_config import GrpcTlsConfig
from quasar.v1 import candidates_pb2, candidates_pb2_grpc

log = logging.getLogger(__name__)

Ids = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]


class GrpcCandidateClient:
    """Calls one candidate service at `target` ("host:port" or any gRPC target) for any number of sources.

    `retrieve` sends one `Retrieve` call whose deadline is `timeout_s` (the caller's remaining budget),
    lowered to the client's own `timeout_s` cap when that is smaller, and checks the answer against the
    service contract (see proto/quasar/v1/candidates.proto): at most `limit` ids, no repeats, none
    negative, scores empty or one finite score per id. An answer that breaks it raises `BadOutput`; it is
    never truncated or repaired. Failed calls raise engine errors through the one gRPC status table
    (`engines._grpc`): UNAVAILABLE -> EngineUnavailable, DEADLINE_EXCEEDED -> EngineTimeout,
    INVALID_ARGUMENT -> BadInput, RESOURCE_EXHAUSTED -> EngineOverloaded, others -> EngineError; each
    names this client (`target`) and the calling source (`model`). Cancelling the awaiting task cancels
    the call on the server too. A service that is down fails calls at once (no waiting for it to come up).

    `start()` opens the channel and never fails because the service is down: it waits at most
    `connect_wait_s` for a first connection and logs a warning without one. `max_ids` bounds `limit`;
    `metadata` goes with every call.
    """

    def __init__(
        self,
        name: str,
        target: str,
        *,
        max_ids: int = 10_000,
        timeout_s: float | None = None,
        connect_wait_s: float = 0.5,
        metadata: Mapping[str, str] | None = None,
        options: tuple[tuple[str, int | str], ...] = CHANNEL_OPTIONS,
        tls: GrpcTlsConfig | None = None,
    ) -> None:
        if max_ids <= 0:
            raise ValueError(f"max_ids must be > 0, got {max_ids}")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}")
        if connect_wait_s < 0:
            raise ValueError(f"connect_wait_s must be >= 0, got {connect_wait_s}")
        self.name = name
        self.target = target
        self.max_ids = max_ids
        self._timeout_s = timeout_s
        self._connect_wait_s = connect_wait_s
        self._metadata = tuple((metadata or {}).items())
        self._options = options
        self._tls = tls
        self._channel: grpc.aio.Channel | None = None
        self._stub: candidates_pb2_grpc.CandidateServiceAsyncStub | None = None
        self._closed = False

    async def start(self) -> None:
        """Open the long-lived channel and start connecting; see the class docstring for waiting."""
        if self._channel is not None:
            raise RuntimeError(f"candidate client {self.name!r} is already started")
        if self._tls is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        else:
            self._channel = open_channel(self.target, self._tls, engine=self.name)
        self._stub = candidates_pb2_grpc.CandidateServiceStub(self._channel)
        # Connecting now means the first request does not pay for the TCP and HTTP/2 handshakes.
        self._channel.get_state(try_to_connect=True)
        if self._connect_wait_s > 0:
            try:
                await asyncio.wait_for(self._channel.channel_ready(), self._connect_wait_s)
            except TimeoutError:
                log.warning(
                    "candidate service %r at %s is not reachable after %.2fs (%s); starting without it, "
                    "calls fail with EngineUnavailable until it is",
                    self.name,
                    self.target,
                    self._connect_wait_s,
                    self._channel.get_state().name,
                )

    async def retrieve(
        self,
        member_id: int,
        *,
        limit: int,
        context: Mapping[str, str],
        source: str,
        request_id: str,
        timeout_s: float | None,
    ) -> tuple[Ids, Scores | None]:
        """At most `limit` unique item ids for `member_id`, best first, and their scores when the service
        sends them (None otherwise). `timeout_s` is the caller's remaining budget (None: no limit of its
        own); none left raises EngineTimeout without calling. `limit` outside 1..max_ids raises BadInput."""
        where = {"target": self.name, "model": source}
        stub = self._stub
        if stub is None or self._closed:
            state = "closed" if self._closed else "not started"
            raise EngineUnavailable(f"candidate client is {state}", **where)
        if not 0 < limit <= self.max_ids:
            raise BadInput(f"limit must be between 1 and {self.max_ids}, got {limit}", **where)
        deadline_s = _min_timeout(timeout_s, self._timeout_s)
        if deadline_s is not None and deadline_s <= 0:
            raise EngineTimeout("no time left for the call", **where)
        request = candidates_pb2.RetrieveRequest(
            request_id=request_id, member_id=member_id, limit=limit, context=context, source=source
        )
        try:
            response = await stub.Retrieve(request, timeout=deadline_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise engine_error(error, deadline_s, **where) from None
        return checked_answer(response, limit, **where)

    async def close(self) -> None:
        """Close the channel; calls in flight end with EngineUnavailable, later calls are refused."""
        self._closed = True
        if self._channel is not None:
            await self._channel.close(grace=None)


def checked_answer(
    response: candidates_pb2.RetrieveResponse, limit: int, *, target: str, model: str
) -> tuple[Ids, Scores | None]:
    """The answer as arrays, or BadOutput naming the first way it breaks the service contract."""
    count = len(response.item_ids)
    if count > limit:
        raise BadOutput(f"the service answered {count} ids for a limit of {limit}", target=target, model=model)
    ids = np.fromiter(response.item_ids, dtype=np.int64, count=count)
    if count and ids.min() < 0:
        raise BadOutput(f"the service answered a negative item id ({int(ids.min())})", target=target, model=model)
    ordered = np.sort(ids)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.size:
        raise BadOutput(
            f"the service answered {repeated.size} repeated ids, e.g. {int(repeated[0])}", target=target, model=model
        )
    if not response.scores:
        return ids, None
    if len(response.scores) != count:
        raise BadOutput(
            f"the service answered {len(response.scores)} scores for {count} ids", target=target, model=model
        )
    scores = np.fromiter(response.scores, dtype=np.float32, count=count)
    if not np.isfinite(scores).all():
        bad = int(np.count_nonzero(~np.isfinite(scores)))
        raise BadOutput(f"the service answered {bad} scores that are NaN or infinite", target=target, model=model)
    return ids, scores


def _min_timeout(first: float | None, second: float | None) -> float | None:
    if first is None:
        return second
    return first if second is None else min(first, second)
