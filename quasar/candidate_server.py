"""The reference `quasar.v1.CandidateService`: per-member candidate lists from a store, served over grpc.aio.

A team that wants a remote candidate source can run this as it is (lists precomputed offline into an
int64 table of the store) or read it as the contract in code: validation, status codes, limits, and
deadlines passed down to the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from kvstore.base import EmbeddingStore
from kvstore.errors import CorruptValue, StoreError
from quasar.v1 import candidates_pb2, candidates_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "quasar.v1.CandidateService"
DEFAULT_MAX_LIMIT = 10_000
PAD = -1
"""Fills the tail of a stored list shorter than the table's width."""


@dataclass(frozen=True)
class MemberList:
    """One member's candidates: unique item ids best first (no padding), their scores (None: the data
    has none), and the version of the data they came from ('' when unversioned)."""

    item_ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32] | None
    version: str


class UnknownSource(LookupError):
    """The calling source is not one this service serves; the message names the ones it does."""


class CandidateLists(Protocol):
    """Where the service reads lists from. `lookup` returns the member's list (empty for a member it has
    none for), raises `UnknownSource` for a source it does not serve and `kvstore.errors.StoreError`
    subclasses when the data cannot be read; `timeout_s` is what is left of the call's deadline."""

    async def lookup(self, member_id: int, *, source: str, timeout_s: float | None) -> MemberList: ...


class StoreCandidateLists:
    """Lists in int64 tables of an `EmbeddingStore`: one row per member (keyed by member id) holding item
    ids best first, padded at the tail with -1. `tables` maps a source name to its table; a source not
    named there reads `default_table` (None: such a source is refused). Each lookup reads the table's
    current version, so a new version is served from the next call on, never mixed within one."""

    def __init__(
        self, store: EmbeddingStore, *, default_table: str | None, tables: Mapping[str, str] | None = None
    ) -> None:
        if default_table is None and not tables:
            raise ValueError("give a default_table or at least one source -> table entry")
        self._store = store
        self._default = default_table
        self._tables = dict(tables or {})

    def table_for(self, source: str) -> str:
        """The table `source` reads; UnknownSource when there is none."""
        table = self._tables.get(source, self._default)
        if table is None:
            raise UnknownSource(f"unknown source {source!r}; this service serves {sorted(self._tables)}")
        return table

    async def lookup(self, member_id: int, *, source: str, timeout_s: float | None) -> MemberList:
        table = self.table_for(source)
        version = (await self._store.current_versions([table]))[table]
        found = await self._store.lookup(
            table, np.array([member_id], dtype=np.int64), version=version, timeout_s=timeout_s
        )
        if found.vectors.dtype != np.int64:
            raise CorruptValue(
                f"table holds {found.vectors.dtype} rows, not int64 item ids", store=self._store.name, table=table
            )
        if not found.found[0]:
            return MemberList(np.empty(0, np.int64), None, version)
        row = found.vectors[0]
        return MemberList(unique_in_order(row[row != PAD]), None, version)


def unique_in_order(ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """`ids` without repeats, each kept at its first position (a list written twice with an id is still
    served by the contract: unique ids, best first)."""
    _, first = np.unique(ids, return_index=True)
    if len(first) == len(ids):
        return ids
    return ids[np.sort(first)]


class CandidateServicer(candidates_pb2_grpc.CandidateServiceServicer):
    """Retrieve over `lists`. INVALID_ARGUMENT for member_id <= 0, limit outside 1..max_limit or an
    unknown source; UNAVAILABLE when the store cannot be read; INTERNAL for data that breaks the
    contract or any other failure (logged here with the request id; the caller gets a sentence, never
    a trace). The store is given what is left of the caller's deadline."""

    def __init__(self, lists: CandidateLists, *, max_limit: int = DEFAULT_MAX_LIMIT) -> None:
        if max_limit <= 0:
            raise ValueError(f"max_limit must be > 0, got {max_limit}")
        self._lists = lists
        self._max_limit = max_limit

    async def Retrieve(
        self, request: candidates_pb2.RetrieveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> candidates_pb2.RetrieveResponse:
        problem = self._invalid(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        code, message, found = await self._lookup(request, context.time_remaining())
        if found is None:
            await context.abort(code, message)
        ids = found.item_ids[: request.limit]
        scores = found.scores[: request.limit].tolist() if found.scores is not None else ()
        return candidates_pb2.RetrieveResponse(item_ids=ids.tolist(), scores=scores, version=found.version)

    def _invalid(self, request: candidates_pb2.RetrieveRequest) -> str:
        if request.member_id <= 0:
            return f"member_id must be > 0, got {request.member_id}"
        if not 0 < request.limit <= self._max_limit:
            return f"limit must be between 1 and {self._max_limit}, got {request.limit}"
        return ""

    async def _lookup(
        self, request: candidates_pb2.RetrieveRequest, timeout_s: float | None
    ) -> tuple[grpc.StatusCode, str, MemberList | None]:
        """The member's list, or the status to abort with (abort itself raises, so it is not called
        inside the handlers below)."""
        try:
            return (
                grpc.StatusCode.OK,
                "",
                await self._lists.lookup(request.member_id, source=request.source, timeout_s=timeout_s),
            )
        except UnknownSource as error:
            return grpc.StatusCode.INVALID_ARGUMENT, str(error), None
        except CorruptValue as error:
            log.error("request %s: candidate lists are corrupt: %s", request.request_id, error)
            return grpc.StatusCode.INTERNAL, f"the candidate lists cannot be decoded: {error}", None
        except StoreError as error:
            log.warning("request %s: candidate lists unavailable: %s", request.request_id, error)
            return grpc.StatusCode.UNAVAILABLE, f"the candidate lists cannot be read now: {error}", None
        except Exception:
            log.exception("request %s: Retrieve failed", request.request_id)
            return (
                grpc.StatusCode.INTERNAL,
                f"Retrieve failed; see the service log (request {request.request_id!r})",
                None,
            )


class CandidateServer:
    """A grpc.aio server for CandidateService (and the standard health service) on `host:port` (0 picks a
    free port). No I/O in the constructor; `start()` binds and returns the port."""

    def __init__(
        self,
        lists: CandidateLists,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_limit: int = DEFAULT_MAX_LIMIT,
        max_concurrent_rpcs: int | None = None,
    ) -> None:
        self._servicer = CandidateServicer(lists, max_limit=max_limit)
        self._address = f"{host}:{port}"
        self._max_concurrent_rpcs = max_concurrent_rpcs
        self._health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind, start serving and report SERVING; returns the bound port. RuntimeError if it cannot bind."""
        server = grpc.aio.server(maximum_concurrent_rpcs=self._max_concurrent_rpcs)
        candidates_pb2_grpc.add_CandidateServiceServicer_to_server(self._servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            self.port = server.add_insecure_port(self._address)
        except RuntimeError as error:
            raise RuntimeError(f"cannot bind the candidate service to {self._address}: {error}") from error
        await server.start()
        self._server = server
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace_s: float | None = 5.0) -> None:
        """Report NOT_SERVING, refuse new calls, let calls in flight finish for up to `grace_s`, then
        cancel them (None: cancel at once)."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(
    lists: CandidateLists,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_limit: int = DEFAULT_MAX_LIMIT,
) -> CandidateServer:
    """A started CandidateServer; its `port` is the bound port. Stop it with `await server.stop()`."""
    server = CandidateServer(lists, host=host, port=port, max_limit=max_limit)
    await server.start()
    return server


async def serve_until(stop: asyncio.Event, server: CandidateServer, *, grace_s: float = 5.0) -> None:
    """Serve until `stop` is set, then stop gracefully (`grace_s` for calls in flight)."""
    await stop.wait()
    await server.stop(grace_s)
