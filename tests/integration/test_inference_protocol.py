"""The gateway's Open Inference Protocol endpoint, called by a stock tritonclient and by raw stubs."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import InferInput, InferRequestedOutput, service_pb2, service_pb2_grpc
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from engines import Offloader, Router
from engines.config import RouteConfig
from engines.errors import EngineUnavailable
from engines.fake import FakeEngine
from engines.onnx import OnnxEngine
from engines.types import ModelMetadata, ModelRef, TensorSpec
from engines.xgboost import XGBoostEngine
from gateway.admission import Admission
from gateway.inference_servicer import InferenceServicer, add_inference_service
from gateway.metrics import GatewayMetrics
from tests.integration.conftest import RunningGateway

RNG = np.random.default_rng(5)


@pytest.fixture(scope="module")
async def client(gateway: RunningGateway) -> AsyncIterator[InferenceServerClient]:
    triton = InferenceServerClient(url=gateway.target)
    yield triton
    await triton.close()


async def in_process(world: Path, model: str, features: np.ndarray) -> np.ndarray:
    """The same model run by the in-process engine, outside any gateway: the reference scores."""
    offloader = Offloader(max_workers=1, max_pending=4)
    models = world / "models"
    engine: OnnxEngine | XGBoostEngine
    if model == "feed_ranker":
        engine = OnnxEngine("ref", {model: models / "ranker.onnx"}, offloader)
        output = "scores"
    else:
        engine = XGBoostEngine(
            "ref", {model: models / "first_pass.ubj"}, offloader, predictor="compiled"
        )  # as the world
        output = "score"
    await engine.start()
    try:
        return (await engine.infer(ModelRef(model), {"features": features}))[output]
    finally:
        await engine.close()
        offloader.close()


async def test_server_and_model_state(client: InferenceServerClient) -> None:
    assert await client.is_server_live()
    assert await client.is_server_ready()
    assert await client.is_model_ready("feed_ranker")
    assert await client.is_model_ready("first_pass")
    assert not await client.is_model_ready("no_such_model")
    server = await client.get_server_metadata(as_json=True)
    assert server["name"] == "quasar"


async def test_model_metadata_is_the_logical_models_signature(client: InferenceServerClient) -> None:
    meta = await client.get_model_metadata("feed_ranker", as_json=True)
    assert meta["name"] == "feed_ranker"
    assert meta["platform"] == "quasar_logical_model"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "77"]}]
    assert meta["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert len(meta["versions"]) == 1
    config = await client.get_model_config("first_pass", as_json=True)
    assert config["config"]["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": ["-1", "8"]}]


@pytest.mark.parametrize(("model", "width", "output"), [("feed_ranker", 77, "scores"), ("first_pass", 8, "score")])
async def test_infer_with_binary_data_matches_the_in_process_engine(
    client: InferenceServerClient, small_world: Path, model: str, width: int, output: str
) -> None:
    features = RNG.normal(size=(37, width)).astype(np.float32)
    tensor = InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)  # the gRPC client always sends raw_input_contents
    result = await client.infer(model, [tensor], outputs=[InferRequestedOutput(output)], request_id="r-1")
    scores = result.as_numpy(output)
    np.testing.assert_array_equal(scores, await in_process(small_world, model, features))
    response = result.get_response()
    assert response.id == "r-1"
    assert response.model_version == (await client.get_model_metadata(model)).versions[0]
    assert response.parameters["quasar_target"].string_param == f"local_{'onnx' if width == 77 else 'xgboost'}/{model}"


async def test_infer_with_typed_contents(gateway: RunningGateway, small_world: Path) -> None:
    features = RNG.normal(size=(3, 8)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="first_pass")
    request.inputs.add(name="features", datatype="FP32", shape=[3, 8]).contents.fp32_contents.extend(features.ravel())
    stub = service_pb2_grpc.GRPCInferenceServiceStub(gateway.channel)
    response = await stub.ModelInfer(request, timeout=5)
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("score", "FP32", [3])]
    scores = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    np.testing.assert_array_equal(scores, await in_process(small_world, "first_pass", features))


async def infer_error(gateway: RunningGateway, request: service_pb2.ModelInferRequest) -> tuple[grpc.StatusCode, str]:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(gateway.channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ModelInfer(request, timeout=5)
    return raised.value.code(), raised.value.details() or ""


def raw_request(model: str, array: np.ndarray, datatype: str = "FP32", **fields: str) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, **fields)
    request.inputs.add(name="features", datatype=datatype, shape=list(array.shape))
    request.raw_input_contents.append(array.tobytes())
    return request


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (raw_request("nope", np.zeros((1, 8), np.float32)), "NOT_FOUND", "no model 'nope'; models: ['feed_ranker'"),
        (raw_request("first_pass", np.zeros((2, 7), np.float32)), "INVALID_ARGUMENT", "dimension 1 must be 8, got 7"),
        (raw_request("first_pass", np.zeros((2, 8), np.float64), "FP64"), "INVALID_ARGUMENT", "dtype float64"),
        (raw_request("first_pass", np.zeros(3, np.float32)), "INVALID_ARGUMENT", "rank 1"),
        (raw_request("first_pass", np.zeros((1, 8), np.float32), "BYTES"), "INVALID_ARGUMENT", "datatype 'BYTES'"),
        (
            raw_request("first_pass", np.full((2, 8), np.nan, np.float32)),
            "INVALID_ARGUMENT",
            "input 'features' holds 16 non-finite values of 16",
        ),
        (
            raw_request("first_pass", np.zeros((1, 8), np.float32), model_version="3"),
            "INVALID_ARGUMENT",
            "leave model_version empty",
        ),
    ],
    ids=["unknown-model", "bad-width", "fp64", "bad-rank", "bytes", "nan", "version"],
)
async def test_errors_map_to_precise_codes(
    gateway: RunningGateway, request_: service_pb2.ModelInferRequest, code: str, message: str
) -> None:
    got, details = await infer_error(gateway, request_)
    assert got.name == code, details
    assert message in details


async def test_raw_contents_must_match_the_declared_shape(gateway: RunningGateway) -> None:
    request = raw_request("first_pass", np.zeros((2, 8), np.float32))
    request.inputs[0].shape[0] = 3
    code, details = await infer_error(gateway, request)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "64 bytes of raw contents; shape [3, 8] of FP32 needs 96" in details


async def test_tritonclient_sees_not_found_for_an_unknown_model(client: InferenceServerClient) -> None:
    tensor = InferInput("features", [1, 8], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 8), np.float32))
    with pytest.raises(InferenceServerException) as raised:
        await client.infer("nope", [tensor])
    assert raised.value.status() == "StatusCode.NOT_FOUND"


async def test_reflection_lists_the_inference_service(gateway: RunningGateway) -> None:
    reflect = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    responses = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for answer in responses:
        names = {s.name for s in answer.list_services_response.service}
        assert "inference.GRPCInferenceService" in names
        assert "quasar.v1.AdminService" not in names, "no admin token, no admin service"
        break


# --- a servicer over fake engines: A/B routing keys and a backend that is down ---------------------------

SIGNATURE = ModelMetadata(
    name="m",
    version="v",
    inputs=(TensorSpec("features", "float32", (-1, 2)),),
    outputs=(TensorSpec("scores", "float32", (-1,)),),
)


@pytest.fixture
async def fake_server() -> AsyncIterator[tuple[service_pb2_grpc.GRPCInferenceServiceStub, dict[str, FakeEngine]]]:
    async def answer(model: ModelRef, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"scores": inputs["features"].sum(axis=1)}

    engines = {name: FakeEngine(name, answer, metadata={"m": SIGNATURE}) for name in ("a", "b")}
    ab = RouteConfig.model_validate({"targets": [{"engine": "a", "model": "m"}, {"engine": "b", "model": "m"}]})
    solo = RouteConfig.model_validate({"targets": [{"engine": "a", "model": "m"}]})
    router = Router({"ab": ab, "solo": solo}, engines)
    await router.start()
    server = grpc.aio.server()
    servicer = InferenceServicer(router, Admission(8, GatewayMetrics()), default_timeout_s=1.0, server_version="test")
    add_inference_service(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel), engines
    await server.stop(None)
    await router.close()


async def target_of(stub: service_pb2_grpc.GRPCInferenceServiceStub, request: service_pb2.ModelInferRequest) -> str:
    response = await stub.ModelInfer(request, timeout=5)
    return str(response.parameters["quasar_target"].string_param)


async def test_routing_key_parameter_or_id_hash_keeps_ab_sticky(fake_server) -> None:  # type: ignore[no-untyped-def]
    stub, _engines = fake_server
    features = np.ones((1, 2), np.float32)
    by_key = {}
    for key in range(40):
        request = raw_request("ab", features)
        request.parameters["routing_key"].int64_param = key
        by_key[key] = await target_of(stub, request)
        again = raw_request("ab", features)
        again.parameters["routing_key"].string_param = str(key)
        assert await target_of(stub, again) == by_key[key]
    assert set(by_key.values()) == {"a/m", "b/m"}
    by_id = {await target_of(stub, raw_request("ab", features, id=f"req-{i}")) for i in range(40)}
    assert by_id == {"a/m", "b/m"}
    assert len({await target_of(stub, raw_request("ab", features, id="same")) for _ in range(5)}) == 1
    bad = raw_request("ab", features)
    bad.parameters["routing_key"].string_param = "member-7"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ModelInfer(bad, timeout=5)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_backend_that_is_down_is_unavailable(fake_server) -> None:  # type: ignore[no-untyped-def]
    stub, engines = fake_server
    engines["a"].fail_with(EngineUnavailable("connection refused"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ModelInfer(raw_request("solo", np.ones((1, 2), np.float32)), timeout=5)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "connection refused" in (raised.value.details() or "")


async def test_requested_outputs_are_checked(fake_server) -> None:  # type: ignore[no-untyped-def]
    stub, _engines = fake_server
    request = raw_request("solo", np.ones((2, 2), np.float32))
    request.outputs.add(name="nope")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ModelInfer(request, timeout=5)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "requested outputs ['nope'] do not exist; outputs: ['scores']" in (raised.value.details() or "")
    request = raw_request("solo", np.ones((2, 2), np.float32))
    request.outputs.add(name="scores").parameters["shared_memory_region"].string_param = "region0"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ModelInfer(request, timeout=5)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "parameters ['shared_memory_region'] are not supported" in (raised.value.details() or "")


async def test_router_metrics_reach_the_gateways_metrics_endpoint(
    client: InferenceServerClient, gateway: RunningGateway
) -> None:
    tensor = InferInput("features", [2, 8], "FP32")
    tensor.set_data_from_numpy(np.zeros((2, 8), np.float32))
    await client.infer("first_pass", [tensor])
    url = f"http://127.0.0.1:{gateway.server.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    target = 'target="local_xgboost/first_pass"'
    assert f'quasar_engine_requests_total{{model="first_pass",outcome="ok",{target}}}' in body
    assert f'quasar_engine_request_seconds_bucket{{le="0.001",model="first_pass",{target}}}' in body
    assert f"quasar_engine_breaker_state{{{target}}} 0.0" in body
    grpc_labels = 'grpc_code="OK",grpc_method="ModelInfer",grpc_service="inference.GRPCInferenceService"'
    assert f"grpc_server_handled_total{{{grpc_labels}" in body
