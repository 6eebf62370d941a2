"""quasar.v1.CandidateService end to end: the engines client against the reference server (over a real
embedded store) and against a peer whose answers and timing the tests control; all servers bind port 0."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from pydantic import ValidationError

from engines.candidate_client import GrpcCandidateClient
from engines.candidate_config import CandidateServiceConfig
from engines.errors import BadInput, BadOutput, EngineError, EngineOverloaded, EngineTimeout, EngineUnavailable
from kvstore.embedded import EmbeddedStore, set_current, write_version
from quasar.candidate_server import CandidateServer, StoreCandidateLists, serve
from quasar.v1 import candidates_pb2, candidates_pb2_grpc
from tests.peers._process import PeerProcess
from tests.peers.candidate_peer import Reply, RunningPeer, running_candidate_peer

# member -> list, best first; rows are padded with -1 to the table's width
LISTS = {7: [70, 71, 72, 73, 74], 8: [80, 81], 9: [90, 91, 90, 92]}  # 9 holds a repeat: served once
WIDTH = 6
# gRPC sends a deadline as a relative grpc-timeout header rounded up: to whole milliseconds below 1 s
# (10 ms below 10 s), so a server may see up to that much more than the budget, never more.
WIRE_ROUNDING_S = 0.002


def write_lists(root: Path, table: str, lists: dict[int, list[int]], version: str) -> None:
    rows = np.full((len(lists), WIDTH), -1, dtype=np.int64)
    for row, items in zip(rows, lists.values(), strict=True):
        row[: len(items)] = items
    set_current(root, table, write_version(root, table, list(lists), rows, dtype="int64", version=version))


async def retrieve(
    client: GrpcCandidateClient,
    member_id: int = 7,
    *,
    limit: int = 10,
    source: str = "remote",
    timeout_s: float | None = 5.0,
) -> tuple[list[int], list[float] | None]:
    ids, scores = await client.retrieve(
        member_id, limit=limit, context={"surface": "feed"}, source=source, request_id="req-1", timeout_s=timeout_s
    )
    assert ids.dtype == np.int64
    assert scores is None or scores.dtype == np.float32
    return ids.tolist(), None if scores is None else scores.tolist()


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    write_lists(tmp_path, "lists", LISTS, "v1")
    write_lists(tmp_path, "jobs_lists", {7: [700, 701]}, "j1")
    return tmp_path


@pytest.fixture
async def reference(store_root: Path) -> AsyncIterator[CandidateServer]:
    store = EmbeddedStore(store_root)
    await store.start()
    server = await serve(StoreCandidateLists(store, default_table="lists", tables={"jobs": "jobs_lists"}), max_limit=50)
    yield server
    await server.stop(None)
    await store.close()


async def started(
    target: str,
    *,
    max_ids: int = 10_000,
    timeout_s: float | None = None,
    connect_wait_s: float = 0.0,
    metadata: dict[str, str] | None = None,
) -> GrpcCandidateClient:
    client = GrpcCandidateClient(
        "svc", target, max_ids=max_ids, timeout_s=timeout_s, connect_wait_s=connect_wait_s, metadata=metadata
    )
    await client.start()
    return client


@pytest.fixture
async def ref_client(reference: CandidateServer) -> AsyncIterator[GrpcCandidateClient]:
    client = await started(f"127.0.0.1:{reference.port}", max_ids=100)
    yield client
    await client.close()


@pytest.fixture
async def peer() -> AsyncIterator[RunningPeer]:
    replies = {
        "scored": Reply(item_ids=[5, 6, 7], scores=[0.9, 0.5, 0.1]),
        "slow": Reply(hold=True),
        "dupes": Reply(item_ids=[5, 6, 5]),
        "mismatch": Reply(item_ids=[5, 6, 7], scores=[0.9, 0.5]),
        "overflow": Reply(item_ids=list(range(1, 12))),
        "negative": Reply(item_ids=[5, -1]),
        "nan": Reply(item_ids=[5, 6], scores=[0.5, float("nan")]),
        "down": Reply(status=grpc.StatusCode.UNAVAILABLE, details="index is reloading"),
        "shed": Reply(status=grpc.StatusCode.RESOURCE_EXHAUSTED, details="too many calls"),
        "broken": Reply(status=grpc.StatusCode.INTERNAL, details="disk full"),
        "refused": Reply(status=grpc.StatusCode.INVALID_ARGUMENT, details="unknown surface"),
    }
    async with running_candidate_peer(replies) as running:
        yield running


@pytest.fixture
async def peer_client(peer: RunningPeer) -> AsyncIterator[GrpcCandidateClient]:
    client = await started(peer.target, metadata={"x-team": "pymk"})
    yield client
    await client.close()


# -- the reference server ------------------------------------------------------------------------------


async def test_reference_server_answers_the_members_list_best_first(ref_client: GrpcCandidateClient) -> None:
    assert await retrieve(ref_client, 7) == ([70, 71, 72, 73, 74], None)
    assert await retrieve(ref_client, 8) == ([80, 81], None)  # padding never leaves the server


async def test_reference_server_honours_the_limit(ref_client: GrpcCandidateClient) -> None:
    assert await retrieve(ref_client, 7, limit=3) == ([70, 71, 72], None)


async def test_reference_server_serves_a_stored_repeat_once(ref_client: GrpcCandidateClient) -> None:
    assert await retrieve(ref_client, 9) == ([90, 91, 92], None)


async def test_a_member_without_a_list_gets_an_empty_answer(ref_client: GrpcCandidateClient) -> None:
    ids, scores = await ref_client.retrieve(12345, limit=10, context={}, source="remote", request_id="", timeout_s=5.0)
    assert (ids.tolist(), scores) == ([], None)


async def test_reference_server_reads_each_sources_table(ref_client: GrpcCandidateClient) -> None:
    assert await retrieve(ref_client, 7, source="jobs") == ([700, 701], None)


async def test_a_new_table_version_is_served_from_the_next_call(
    ref_client: GrpcCandidateClient, reference: CandidateServer, store_root: Path
) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{reference.port}")
    stub = candidates_pb2_grpc.CandidateServiceStub(channel)
    request = candidates_pb2.RetrieveRequest(member_id=8, limit=10, source="remote")
    try:
        assert (await stub.Retrieve(request, timeout=5.0)).version == "v1"
        write_lists(store_root, "lists", {8: [88]}, "v2")
        answer = await stub.Retrieve(request, timeout=5.0)
    finally:
        await channel.close(None)
    assert (list(answer.item_ids), answer.version) == ([88], "v2")


@pytest.mark.parametrize(
    ("member_id", "limit", "source", "details"),
    [
        (0, 10, "remote", "member_id must be > 0, got 0"),
        (-3, 10, "remote", "member_id must be > 0, got -3"),
        (7, 0, "remote", "limit must be between 1 and 50, got 0"),
        (7, -1, "remote", "limit must be between 1 and 50, got -1"),
        (7, 51, "remote", "limit must be between 1 and 50, got 51"),
    ],
)
async def test_reference_server_refuses_bad_requests_with_a_clear_message(
    reference: CandidateServer, member_id: int, limit: int, source: str, details: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{reference.port}") as channel:
        stub = candidates_pb2_grpc.CandidateServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Retrieve(
                candidates_pb2.RetrieveRequest(member_id=member_id, limit=limit, source=source), timeout=5.0
            )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == details


async def test_an_unknown_source_is_refused_when_there_is_no_default_table(store_root: Path) -> None:
    store = EmbeddedStore(store_root)
    await store.start()
    server = await serve(StoreCandidateLists(store, default_table=None, tables={"jobs": "jobs_lists"}))
    client = await started(f"127.0.0.1:{server.port}")
    try:
        with pytest.raises(BadInput) as caught:
            await retrieve(client, 7, source="pymk")
    finally:
        await client.close()
        await server.stop(None)
        await store.close()
    assert str(caught.value) == "[svc/pymk] INVALID_ARGUMENT: unknown source 'pymk'; this service serves ['jobs']"


async def test_a_missing_table_is_unavailable_without_internals_in_the_details(store_root: Path) -> None:
    store = EmbeddedStore(store_root)
    await store.start()
    server = await serve(StoreCandidateLists(store, default_table="not_loaded_yet"))
    client = await started(f"127.0.0.1:{server.port}")
    try:
        with pytest.raises(EngineUnavailable) as caught:
            await retrieve(client, 7)
    finally:
        await client.close()
        await server.stop(None)
        await store.close()
    message = str(caught.value)
    assert "UNAVAILABLE: the candidate lists cannot be read now:" in message
    assert "no table 'not_loaded_yet'" in message
    assert "Traceback" not in message
    assert "Error" not in message  # no Python class name


# -- the client's deadline ------------------------------------------------------------------------------


async def test_the_outgoing_deadline_is_the_callers_remaining_budget(
    peer: RunningPeer, peer_client: GrpcCandidateClient
) -> None:
    await retrieve(peer_client, timeout_s=0.9)
    seen = peer.peer.calls[-1].time_remaining_s
    assert seen is not None
    # The budget it was given, not a default: at most 0.9 s plus the wire's rounding up to whole ms.
    assert 0.4 < seen <= 0.9 + WIRE_ROUNDING_S


async def test_the_clients_own_cap_lowers_a_larger_budget(peer: RunningPeer) -> None:
    client = await started(peer.target, timeout_s=0.8)
    try:
        await retrieve(client, timeout_s=30.0)
    finally:
        await client.close()
    seen = peer.peer.calls[-1].time_remaining_s
    assert seen is not None
    assert 0.3 < seen <= 0.8 + WIRE_ROUNDING_S


async def test_no_budget_sends_no_deadline(peer: RunningPeer, peer_client: GrpcCandidateClient) -> None:
    await retrieve(peer_client, timeout_s=None)
    assert peer.peer.calls[-1].time_remaining_s is None


async def test_no_budget_left_fails_without_calling(peer: RunningPeer, peer_client: GrpcCandidateClient) -> None:
    with pytest.raises(EngineTimeout, match="no time left"):
        await retrieve(peer_client, timeout_s=0.0)
    assert peer.peer.calls == []


async def test_the_request_carries_what_the_caller_gave(peer: RunningPeer, peer_client: GrpcCandidateClient) -> None:
    ids, scores = await retrieve(peer_client, 42, limit=9, source="scored")
    assert ids == [5, 6, 7]
    assert scores == pytest.approx([0.9, 0.5, 0.1])
    call = peer.peer.calls[-1]
    request = call.request
    assert (request.member_id, request.limit, request.source, request.request_id) == (42, 9, "scored", "req-1")
    assert dict(request.context) == {"surface": "feed"}
    assert ("x-team", "pymk") in call.metadata


# -- failures -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.timeout(20)
async def test_a_service_that_is_down_neither_blocks_startup_nor_hangs_calls() -> None:
    client = GrpcCandidateClient("svc", f"127.0.0.1:{_free_port()}", connect_wait_s=0.2)
    await client.start()  # logs a warning, does not raise
    try:
        # A budget far beyond the test's timeout: an EngineTimeout would mean the call waited for it.
        with pytest.raises(EngineUnavailable, match=r"\[svc/remote\] UNAVAILABLE"):
            await retrieve(client, timeout_s=600.0)
    finally:
        await client.close()


@pytest.mark.timeout(20)
async def test_a_service_that_goes_down_fails_calls_as_unavailable(store_root: Path) -> None:
    store = EmbeddedStore(store_root)
    await store.start()
    server = await serve(StoreCandidateLists(store, default_table="lists"))
    client = await started(f"127.0.0.1:{server.port}", connect_wait_s=2.0)
    try:
        assert (await retrieve(client))[0] == [70, 71, 72, 73, 74]
        await server.stop(None)
        with pytest.raises(EngineUnavailable):
            await retrieve(client, timeout_s=600.0)
    finally:
        await client.close()
        await store.close()


async def test_a_slow_service_times_out_and_its_call_is_cancelled_there(
    peer: RunningPeer, peer_client: GrpcCandidateClient
) -> None:
    with pytest.raises(EngineTimeout, match=r"\[svc/slow\] no answer within 0.2s \(DEADLINE_EXCEEDED"):
        await retrieve(peer_client, source="slow", timeout_s=0.2)
    await asyncio.wait_for(peer.peer.cancelled.wait(), 10.0)


async def test_cancelling_the_caller_cancels_the_servers_call(
    peer: RunningPeer, peer_client: GrpcCandidateClient
) -> None:
    task = asyncio.create_task(retrieve(peer_client, source="slow", timeout_s=60.0))
    await asyncio.wait_for(peer.peer.entered.wait(), 10.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(peer.peer.cancelled.wait(), 10.0)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("dupes", "the service answered 1 repeated ids, e.g. 5"),
        ("mismatch", "the service answered 2 scores for 3 ids"),
        ("overflow", "the service answered 11 ids for a limit of 10"),
        ("negative", "the service answered a negative item id (-1)"),
        ("nan", "the service answered 1 scores that are NaN or infinite"),
    ],
)
async def test_answers_that_break_the_contract_are_bad_output(
    peer_client: GrpcCandidateClient, source: str, message: str
) -> None:
    with pytest.raises(BadOutput) as caught:
        await retrieve(peer_client, source=source, limit=10)
    assert str(caught.value) == f"[svc/{source}] {message}"


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        ("down", EngineUnavailable, "UNAVAILABLE: index is reloading"),
        ("shed", EngineOverloaded, "RESOURCE_EXHAUSTED: too many calls"),
        ("refused", BadInput, "INVALID_ARGUMENT: unknown surface"),
        ("broken", EngineError, "INTERNAL: disk full"),
    ],
)
async def test_service_statuses_map_to_engine_errors(
    peer_client: GrpcCandidateClient, source: str, error: type[EngineError], message: str
) -> None:
    with pytest.raises(EngineError) as caught:
        await retrieve(peer_client, source=source)
    assert type(caught.value) is error
    assert str(caught.value) == f"[svc/{source}] {message}"


@pytest.mark.parametrize("limit", [0, -5, 101])
async def test_a_limit_outside_max_ids_is_refused_before_calling(peer: RunningPeer, limit: int) -> None:
    client = await started(peer.target, max_ids=100)
    try:
        with pytest.raises(BadInput, match=rf"limit must be between 1 and 100, got {limit}"):
            await retrieve(client, limit=limit)
    finally:
        await client.close()
    assert peer.peer.calls == []


async def test_calls_before_start_and_after_close_are_unavailable(peer: RunningPeer) -> None:
    client = GrpcCandidateClient("svc", peer.target)
    with pytest.raises(EngineUnavailable, match="not started"):
        await retrieve(client)
    await client.start()
    await client.close()
    with pytest.raises(EngineUnavailable, match="closed"):
        await retrieve(client)
    assert peer.peer.calls == []


# -- configuration ---------------------------------------------------------------------------------------


def test_config_builds_a_client_with_its_settings() -> None:
    config = CandidateServiceConfig(target="cands.internal:50061", timeout_s=0.05, max_ids=500, metadata={"x-k": "v"})
    client = config.build("pymk")
    assert (client.name, client.target, client.max_ids) == ("pymk", "cands.internal:50061", 500)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"target": "cands.internal"}, "target must be host:port"),
        ({"target": "cands:99999"}, "target must be host:port"),
        ({"target": "127.0.0.1:50061", "timeout_s": 0}, "greater than 0"),
        ({"target": "127.0.0.1:50061", "metadata": {"X-Team": "a"}}, "metadata keys must be lower-case"),
        ({"target": "127.0.0.1:50061", "deadline": 1}, "Extra inputs are not permitted"),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CandidateServiceConfig.model_validate(values)


def test_config_accepts_grpc_targets_and_bracketed_ipv6() -> None:
    for target in ("dns:///cands.internal:50061", "unix:/run/cands.sock", "[::1]:50061"):
        assert CandidateServiceConfig(target=target).target == target


# -- the command ---------------------------------------------------------------------------------------


@pytest.fixture
def cli_server(store_root: Path, tmp_path: Path) -> Iterator[tuple[PeerProcess, int]]:
    argv = [sys.executable, "-m", "quasar.cli_candidates", "serve", "--root", str(store_root), "--table", "lists"]
    process = PeerProcess.spawn("candidates serve", [*argv, "--port", "0"], tmp_path / "serve.log")
    port: list[int] = []

    def listening() -> bool:
        for line in process.log_path.read_text().splitlines():
            if line.startswith("listening on 127.0.0.1:"):
                port.append(int(line.rsplit(":", 1)[1]))
                return True
        return False

    process.wait_until(listening, 60.0, "listening line")
    yield process, port[0]
    process.stop()


def test_the_serve_command_serves_the_store_and_stops_cleanly_on_sigterm(cli_server: tuple[PeerProcess, int]) -> None:
    from click.testing import CliRunner

    from quasar.cli_candidates import candidates

    process, port = cli_server
    call = ["retrieve", "--target", f"127.0.0.1:{port}", "--limit", "2", "--member"]
    answered = CliRunner().invoke(candidates, [*call, "7"])
    assert answered.exit_code == 0, answered.output
    assert answered.stdout.splitlines() == ["1\t70", "2\t71"]
    refused = CliRunner().invoke(candidates, [*call, "0"])
    assert refused.exit_code == 2
    assert refused.stderr.strip() == "error: [cli] INVALID_ARGUMENT: member_id must be > 0, got 0"
    process.stop()
    assert process.process.returncode == 0, process.log_tail()


def test_the_serve_command_names_a_missing_table(store_root: Path) -> None:
    from click.testing import CliRunner

    from quasar.cli_candidates import candidates

    result = CliRunner().invoke(candidates, ["serve", "--root", str(store_root), "--table", "nope", "--port", "0"])
    assert result.exit_code == 1
    assert "no table 'nope'" in result.output
    assert "Traceback" not in result.output
