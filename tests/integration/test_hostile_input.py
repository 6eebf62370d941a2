"""Hostile bytes on the wire: undecodable and oversized bodies on every service get a clear status.

Bodies are sent raw (a channel's multicallables without serializers), exactly as a broken or malicious
client would: random bytes, a truncated varint, invalid UTF-8 in a string field, a length past the end.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.server import _CLIENT_PROVOKED_LOG_INTERVAL_S
from quasar.v1 import feed_pb2
from tests.integration.conftest import Gates, RunningGateway, make_settings, start_gateway

TOKEN = "hostile-admin-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)

# method -> the request message it expects (as the detail names it)
UNARY_METHODS = {
    "/quasar.v1.FeedService/GetFeed": "quasar.v1.GetFeedRequest",
    "/inference.GRPCInferenceService/ModelInfer": "inference.ModelInferRequest",
    "/inference.GRPCInferenceService/ModelMetadata": "inference.ModelMetadataRequest",
    "/inference.GRPCInferenceService/ServerLive": "inference.ServerLiveRequest",
    "/quasar.v1.AdminService/GetRoutes": "quasar.v1.GetRoutesRequest",
    "/quasar.v1.AdminService/SetRoutes": "quasar.v1.SetRoutesRequest",
    "/grpc.health.v1.Health/Check": "grpc.health.v1.HealthCheckRequest",
}

# Patterns that would mean internals leaked into a status detail.
LEAKS = ("Traceback", "<class", ".py", "/work", "DecodeError", "Exception", "Unexpected")


def string_field(message: type, name: str, value: bytes) -> bytes:
    """The wire bytes of one length-delimited field of `message`, holding `value` unchecked."""
    number = message.DESCRIPTOR.fields_by_name[name].number  # type: ignore[attr-defined]
    return bytes([number << 3 | 2, len(value)]) + value


BAD_BODIES = {
    "random": (b"\xff\xff\xff\xff", "truncated varint"),
    "truncated-varint": (b"\x08\x80\x80", "truncated varint"),
    "length-past-end": (b"\x12\x7fabc", "length 127 runs past the end (3 bytes left)"),
    "wire-type-7": (b"\x0f", "invalid wire type 7"),
    "field-zero": (b"\x00\x01", "invalid field number 0"),
}


@pytest.fixture(scope="module")
async def hostile_gateway(small_world: Path, test_workflows: Path) -> AsyncIterator[RunningGateway]:
    running = await start_gateway(make_settings(small_world, test_workflows, admin_token=TOKEN), Gates())
    yield running
    await running.channel.close()
    await running.server.drain_and_stop()


async def raw_status(gateway: RunningGateway, method: str, body: bytes) -> tuple[grpc.StatusCode, str]:
    call = gateway.channel.unary_unary(method)  # no serializers: bytes go out as they are
    try:
        await call(body, metadata=AUTH, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def assert_no_leak(detail: str) -> None:
    for leak in LEAKS:
        assert leak not in detail, f"{leak!r} leaked into {detail!r}"


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """No ERROR record and no traceback anywhere in the log."""
    for record in caplog.records:
        assert record.levelno < logging.ERROR, f"ERROR logged: {record.getMessage()}"
        assert record.exc_info is None, f"traceback logged with {record.getMessage()!r}"
        assert "Traceback" not in record.getMessage()


async def assert_serving(gateway: RunningGateway) -> None:
    health = health_pb2_grpc.HealthStub(gateway.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", sorted(UNARY_METHODS))
@pytest.mark.parametrize("body", sorted(BAD_BODIES))
async def test_undecodable_bodies_are_invalid_argument_naming_the_problem(
    hostile_gateway: RunningGateway, caplog: pytest.LogCaptureFixture, method: str, body: str
) -> None:
    caplog.set_level(logging.WARNING)
    data, problem = BAD_BODIES[body]
    code, detail = await raw_status(hostile_gateway, method, data)
    assert code is grpc.StatusCode.INVALID_ARGUMENT, detail
    assert detail.startswith(f"request body is not a valid {UNARY_METHODS[method]} message: ")
    assert problem in detail
    assert_no_leak(detail)
    assert_quiet(caplog)


async def test_invalid_utf8_in_a_string_field_names_the_field(hostile_gateway: RunningGateway) -> None:
    body = string_field(feed_pb2.GetFeedRequest, "workflow", b"\xff\xfefeed")
    code, detail = await raw_status(hostile_gateway, "/quasar.v1.FeedService/GetFeed", body)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert detail == "request body is not a valid quasar.v1.GetFeedRequest message: field 'workflow' is not valid UTF-8"


async def test_invalid_utf8_in_a_map_key_names_the_map(hostile_gateway: RunningGateway) -> None:
    entry = bytes([0x0A, 2]) + b"\xc3\x28" + bytes([0x12, 1]) + b"v"  # key (field 1) is invalid UTF-8
    body = bytes([feed_pb2.GetFeedRequest.DESCRIPTOR.fields_by_name["context"].number << 3 | 2, len(entry)]) + entry
    code, detail = await raw_status(hostile_gateway, "/quasar.v1.FeedService/GetFeed", body)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert detail.endswith("field 'context' entry: field 'key' is not valid UTF-8")


async def test_a_valid_body_still_works_after_bad_ones(hostile_gateway: RunningGateway) -> None:
    for data, _ in BAD_BODIES.values():
        await raw_status(hostile_gateway, "/quasar.v1.FeedService/GetFeed", data)
    request = feed_pb2.GetFeedRequest(member_id=3, count=5)
    code, detail = await raw_status(hostile_gateway, "/quasar.v1.FeedService/GetFeed", request.SerializeToString())
    assert code is grpc.StatusCode.OK, detail
    await assert_serving(hostile_gateway)


async def test_streaming_methods_refuse_undecodable_bodies_too(hostile_gateway: RunningGateway) -> None:
    watch = hostile_gateway.channel.unary_stream("/grpc.health.v1.Health/Watch")(b"\x0a\x05ab", timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in watch:
            pass
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.health.v1.HealthCheckRequest" in (raised.value.details() or "")

    reflection = hostile_gateway.channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    call = reflection(timeout=5)
    await call.write(b"\xff\xff")
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "ServerReflectionRequest message" in (raised.value.details() or "")


@pytest.mark.parametrize("method", ["/quasar.v1.FeedService/GetFeed", "/inference.GRPCInferenceService/ModelInfer"])
async def test_oversized_bodies_are_resource_exhausted_by_grpc(
    hostile_gateway: RunningGateway, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    caplog.set_level(logging.WARNING)
    limit = hostile_gateway.server.max_request_bytes
    code, detail = await raw_status(hostile_gateway, method, b"\x00" * (limit + 1))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert detail == f"SERVER: Received message larger than max ({limit + 1} vs. {limit})"
    assert_quiet(caplog)
    await assert_serving(hostile_gateway)


async def test_a_flood_of_bad_bodies_logs_a_bounded_number_of_warnings(
    small_world: Path, test_workflows: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    fresh = await start_gateway(make_settings(small_world, test_workflows), Gates())  # no earlier warnings
    calls = 60
    started = time.monotonic()
    try:
        for _ in range(calls):
            code, _detail = await raw_status(fresh, "/inference.GRPCInferenceService/ModelInfer", b"\x08\x80")
            assert code is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        elapsed_s = time.monotonic() - started
        await fresh.channel.close()
        await fresh.server.drain_and_stop()
    warnings = [record for record in caplog.records if "undecodable" in record.getMessage()]
    # one per method per interval: however slow this machine was, far fewer than one per call
    assert 1 <= len(warnings) <= math.ceil(elapsed_s / _CLIENT_PROVOKED_LOG_INTERVAL_S) + 1 < calls
    assert all(record.levelno == logging.WARNING for record in warnings)
    assert_quiet(caplog)


async def test_serve_refuses_a_bad_workflow_file_in_one_line(small_world: Path, tmp_path: Path) -> None:
    """Workflow files are only read when the gateway starts: their problems still exit 2 in one line each."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "feed.yaml").write_text('workflow: feed\nversion: "1"\nstepz: []\n')
    config = tmp_path / "settings.yaml"
    config.write_text(f"port: 0\nmetrics_port: null\nworld_dir: {small_world}\nworkflows_dir: {workflows}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from quasar.cli import main; main()", "serve", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    errors = [line for line in stderr.decode().splitlines() if line.startswith("error: ")]
    assert process.returncode == 2
    assert errors
    assert all(line.startswith(f"error: {workflows / 'feed.yaml'}: ") for line in errors)
    assert any("stepz" in line for line in errors)
    assert "Traceback" not in stderr.decode() + stdout.decode()
