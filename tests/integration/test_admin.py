"""AdminService: routes read and swapped at run time, behind a token, without failing a request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from engines.config import EnginesConfig
from quasar.v1 import admin_pb2, admin_pb2_grpc, feed_pb2
from tests.integration.conftest import Gates, RunningGateway, make_settings, start_gateway

TOKEN = "s3cret-admin-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def engines_config(world: Path) -> EnginesConfig:
    """Two XGBoost engines over the same first-pass model, so routes can move between them."""
    models = world / "models"
    xgb = {"kind": "xgboost", "models": {"first_pass": str(models / "first_pass.ubj")}}
    return EnginesConfig.model_validate(
        {
            "engines": {
                "local_onnx": {"kind": "onnx", "models": {"feed_ranker": str(models / "ranker.onnx")}},
                "xgb_a": xgb,
                "xgb_b": xgb,
            },
            "routes": {
                "feed_ranker": {"targets": [{"engine": "local_onnx", "model": "feed_ranker"}]},
                "first_pass": {"targets": [{"engine": "xgb_a", "model": "first_pass"}]},
            },
        }
    )


@pytest.fixture(scope="module")
async def admin_gateway(small_world: Path, test_workflows: Path) -> AsyncIterator[RunningGateway]:
    settings = make_settings(small_world, test_workflows, admin_token=TOKEN, engines=engines_config(small_world))
    running = await start_gateway(settings, Gates())
    yield running
    await running.channel.close()
    await running.server.drain_and_stop()


@pytest.fixture
def admin(admin_gateway: RunningGateway) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(admin_gateway.channel)


def first_pass_on(engine: str) -> str:
    return f"first_pass: {{targets: [{{engine: {engine}, model: first_pass}}]}}"


async def set_routes(
    admin: admin_pb2_grpc.AdminServiceStub, routes: str, **fields: object
) -> admin_pb2.SetRoutesResponse:
    request = admin_pb2.SetRoutesRequest(routes=routes, **fields)  # type: ignore[arg-type]
    return await admin.SetRoutes(request, metadata=AUTH, timeout=5)


async def status_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code(), raised.value.details() or ""


async def test_get_routes_shows_the_table_and_engines(admin: admin_pb2_grpc.AdminServiceStub) -> None:
    await set_routes(admin, first_pass_on("xgb_a"))
    reply = await admin.GetRoutes(admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=5)
    routes = json.loads(reply.routes_json)
    assert sorted(routes) == ["feed_ranker", "first_pass"]
    assert routes["first_pass"]["targets"][0]["engine"] == "xgb_a"
    assert routes["first_pass"]["targets"][0]["breaker"]["open_s"] == 5.0, "every field explicit"
    assert list(reply.engines) == ["local_onnx", "xgb_a", "xgb_b"]
    assert len(reply.version) == 16


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),), (("authorization", f"bearer {TOKEN}"),)],
    ids=["missing", "wrong", "no-scheme", "lowercase-scheme"],
)
async def test_a_missing_or_wrong_token_is_unauthenticated(
    admin: admin_pb2_grpc.AdminServiceStub, metadata: tuple[tuple[str, str], ...]
) -> None:
    for call in (
        admin.GetRoutes(admin_pb2.GetRoutesRequest(), metadata=metadata, timeout=5),
        admin.SetRoutes(admin_pb2.SetRoutesRequest(routes=first_pass_on("xgb_b")), metadata=metadata, timeout=5),
    ):
        code, details = await status_of(call)
        assert code is grpc.StatusCode.UNAUTHENTICATED
        assert details == "admin calls need metadata 'authorization: Bearer <admin token>'"
    reply = await admin.GetRoutes(admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=5)
    assert json.loads(reply.routes_json)["first_pass"]["targets"][0]["engine"] == "xgb_a", "nothing changed"


async def test_without_a_token_setting_there_is_no_admin_service(gateway: RunningGateway) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(gateway.channel)
    code, _ = await status_of(stub.GetRoutes(admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=5))
    assert code is grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(
    ("routes", "code", "message"),
    [
        ("first_pass: [unclosed", "INVALID_ARGUMENT", "routes are not valid YAML/JSON"),
        ("- a\n- b", "INVALID_ARGUMENT", "routes must be a mapping of logical model name to route, got list"),
        ("first_pass: {targets: []}", "INVALID_ARGUMENT", "List should have at least 1 item after validation"),
        (
            "first_pass: {targets: [{engine: xgb_a, model: first_pass, weight: 0}]}",
            "INVALID_ARGUMENT",
            "at least one target needs a weight > 0",
        ),
        (
            '{"first_pass": {"targets": [{"engine": "xgb_a", "model": "first_pass", "colour": "red"}]}}',
            "INVALID_ARGUMENT",
            "Extra inputs are not permitted",
        ),
        (first_pass_on("triton_z"), "INVALID_ARGUMENT", "names engine 'triton_z', which is not defined"),
        (
            "first_pass: {targets: [{engine: xgb_b, model: fpr_typo}]}",
            "FAILED_PRECONDITION",
            "route 'first_pass' target xgb_b/fpr_typo",
        ),
        (
            "first_pass: {targets: [{engine: xgb_a, model: first_pass}], "
            "fallback: [{engine: local_onnx, model: feed_ranker}]}",
            "INVALID_ARGUMENT",
            "route 'first_pass': its targets do not take the same tensors",
        ),
    ],
    ids=[
        "yaml",
        "not-a-mapping",
        "no-targets",
        "zero-weight",
        "extra-field",
        "unknown-engine",
        "unknown-model",
        "other-signature",
    ],
)
async def test_bad_routes_are_refused_and_change_nothing(
    admin: admin_pb2_grpc.AdminServiceStub, routes: str, code: str, message: str
) -> None:
    before = await admin.GetRoutes(admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=5)
    got, details = await status_of(set_routes(admin, routes))
    assert got.name == code, details
    assert message in details
    after = await admin.GetRoutes(admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=5)
    assert after.version == before.version


async def test_set_merges_dry_runs_removes_and_checks_the_expected_version(
    admin: admin_pb2_grpc.AdminServiceStub,
) -> None:
    start = await set_routes(admin, first_pass_on("xgb_a"))
    dry = await set_routes(admin, first_pass_on("xgb_b"), dry_run=True)
    assert list(dry.changed) == ["first_pass"]
    assert (await admin.GetRoutes(admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=5)).version == start.version

    extra = "first_pass_copy: {targets: [{engine: xgb_b, model: first_pass}]}"
    added = await set_routes(admin, extra, expected_version=start.version)
    assert list(added.changed) == ["first_pass_copy"]
    assert sorted(json.loads(added.routes_json)) == ["feed_ranker", "first_pass", "first_pass_copy"], "a merge"

    code, details = await status_of(set_routes(admin, first_pass_on("xgb_b"), expected_version=start.version))
    assert code is grpc.StatusCode.ABORTED
    assert f"routes are at version {added.version}, not {start.version}" in details

    code, details = await status_of(set_routes(admin, "", remove=["nope"]))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot remove routes ['nope']" in details
    removed = await set_routes(admin, "", remove=["first_pass_copy"], expected_version=added.version)
    assert list(removed.changed) == ["first_pass_copy"]
    assert removed.version == start.version, "the same table has the same version"


class Completed:
    """Counts answered requests; lets the test wait for N more without sleeping."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        self._changed.set()

    async def at_least(self, n: int) -> None:
        while self.count < n:
            self._changed.clear()
            await self._changed.wait()


async def test_swapping_routes_under_load_fails_no_request(
    admin_gateway: RunningGateway, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    await set_routes(admin, first_pass_on("xgb_a"))
    stop = asyncio.Event()
    completed = Completed()
    failures: list[str] = []
    targets_seen: set[str] = set()

    async def client(member: int) -> None:
        while not stop.is_set():
            try:
                reply = await admin_gateway.stub.GetFeed(
                    feed_pb2.GetFeedRequest(member_id=member, count=20), timeout=10
                )
            except grpc.aio.AioRpcError as error:
                failures.append(f"{error.code().name}: {error.details()}")
                continue
            # A source out of time on a busy machine degrades an answer as 'network: timeout'; a route that
            # failed a call (a swap glitch) would show as 'network: dependency'.
            not_timeouts = [reason for reason in reply.degraded_reasons if not reason.endswith(": timeout")]
            if not_timeouts or (not reply.degraded and len(reply.items) != 20):
                failures.append(f"degraded: {list(reply.degraded_reasons)}, {len(reply.items)} items")
            targets_seen.update(m.target for m in reply.model_versions if m.model == "first_pass")
            completed.add()

    clients = [asyncio.create_task(client(member)) for member in range(1, 7)]
    try:
        for swap in range(8):
            await completed.at_least(completed.count + 5)
            engine = "xgb_b" if swap % 2 == 0 else "xgb_a"
            weights = "{engine: xgb_a, model: first_pass, weight: 1}, {engine: xgb_b, model: first_pass, weight: 1}"
            routes = first_pass_on(engine) if swap % 3 else f"first_pass: {{targets: [{weights}]}}"
            await set_routes(admin, routes)
        await completed.at_least(completed.count + 5)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert failures == []
    assert targets_seen == {"xgb_a/first_pass", "xgb_b/first_pass"}
    assert completed.count >= 45
