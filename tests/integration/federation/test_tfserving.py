"""The TF Serving engine against the conformance peer: versions and labels, signature checks at startup,
both tensor encodings, and the peer's own conformance to TF Serving's API."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from engines.errors import BadInput, EngineUnavailable, ModelNotFound
from engines.tfserving import TFServingEngine
from engines.types import ModelRef
from quasar.demo.layout import RANKER_INPUT, RANKER_OUTPUT
from quasar.demo.onnx_export import dense_forward
from tests.integration.federation.conftest import RANKER, started, tfserving_config
from tests.peers.fixtures import TF_FIELDS, TF_LABELS
from tests.peers.tfserving_peer import TFServingPeer
from tests.peers.triton_server import free_ports


def engine(peer: TFServingPeer, model: str = RANKER, **extra: object) -> TFServingEngine:
    built = tfserving_config(peer, model, **extra).build("tfs", None)  # type: ignore[arg-type]  # no offloader
    assert isinstance(built, TFServingEngine)
    return built


def reference(world_weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return dense_forward(world_weights, x)


@pytest.fixture(scope="module")
def weights(small_world) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    with np.load(small_world / "models" / "ranker_weights.npz") as npz:
        return {name: npz[name] for name in npz.files}


async def test_metadata_comes_from_the_saved_model_signature(tfserving_peer: TFServingPeer) -> None:
    async with started(engine(tfserving_peer)) as tfs:
        meta = await tfs.metadata(ModelRef(RANKER))
    assert meta.version == str(max(TF_LABELS.values())), "no version asked: the latest"
    assert [(s.name, s.dtype, s.shape) for s in meta.inputs] == [(RANKER_INPUT, "float32", (-1, 77))]
    assert [(s.name, s.dtype, s.shape) for s in meta.outputs] == [(RANKER_OUTPUT, "float32", (-1, 4))]


@pytest.mark.parametrize(
    ("config", "ref_version", "expected"),
    [
        ({"version": 1}, None, "1"),
        ({"version_label": "stable"}, None, "1"),
        ({"version_label": "canary"}, None, "2"),
        ({}, "1", "1"),
        ({}, "canary", "2"),
    ],
)
async def test_versions_and_labels_resolve(
    tfserving_peer: TFServingPeer,
    world_rows: np.ndarray,
    weights: dict[str, np.ndarray],
    config: dict[str, Any],
    ref_version: str | None,
    expected: str,
) -> None:
    async with started(engine(tfserving_peer, **config)) as tfs:
        ref = ModelRef(RANKER, ref_version)
        assert (await tfs.metadata(ref)).version == expected
        x = world_rows[:32]
        scores = (await tfs.infer(ref, {RANKER_INPUT: x}, timeout_s=5.0))[RANKER_OUTPUT]
    np.testing.assert_allclose(scores, reference(weights, x), atol=1e-5, rtol=0)


async def test_unknown_versions_and_labels_are_model_not_found(tfserving_peer: TFServingPeer) -> None:
    async with started(engine(tfserving_peer)) as tfs:
        x = np.zeros((2, 77), np.float32)
        with pytest.raises(ModelNotFound, match="Specific"):
            await tfs.infer(ModelRef(RANKER, "7"), {RANKER_INPUT: x}, timeout_s=5.0)
        with pytest.raises(ModelNotFound, match="Unrecognized servable version label: beta"):
            await tfs.infer(ModelRef(RANKER, "beta"), {RANKER_INPUT: x}, timeout_s=5.0)


async def test_answers_sent_as_float_val_are_decoded_too(
    tfserving_peer: TFServingPeer, world_rows: np.ndarray, weights: dict[str, np.ndarray]
) -> None:
    async with started(engine(tfserving_peer, TF_FIELDS)) as tfs:
        scores = (await tfs.infer(ModelRef(TF_FIELDS), {RANKER_INPUT: world_rows}, timeout_s=5.0))[RANKER_OUTPUT]
    assert scores.dtype == np.float32
    assert scores.shape == (len(world_rows), 4)
    np.testing.assert_allclose(scores, reference(weights, world_rows), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("model", "config", "message"),
    [
        ("no_such_model", {}, "Could not find any versions of model no_such_model"),
        (RANKER, {"signature_name": "predict_typo"}, "no signature 'predict_typo'; signatures: .'serving_default'"),
        (RANKER, {"version": 9}, "Specific"),
        (RANKER, {"version_label": "beta"}, "Unrecognized servable version label"),
    ],
)
async def test_startup_fails_clearly_on_a_mismatch(
    tfserving_peer: TFServingPeer, model: str, config: dict[str, object], message: str
) -> None:
    tfs = engine(tfserving_peer, model, **config)
    with pytest.raises(ModelNotFound, match=message):
        await tfs.start()
    await tfs.close()


async def test_startup_against_a_port_nobody_listens_on(tfserving_peer: TFServingPeer) -> None:
    (port,) = free_ports(1)
    tfs = TFServingEngine("tfs", f"127.0.0.1:{port}", RANKER, startup_timeout_s=2.0)
    with pytest.raises(EngineUnavailable, match="UNAVAILABLE"):
        await tfs.start()
    await tfs.close()


async def test_inputs_are_checked_against_the_signature_before_sending(tfserving_peer: TFServingPeer) -> None:
    async with started(engine(tfserving_peer)) as tfs:
        with pytest.raises(BadInput, match="dimension 1 must be 77"):
            await tfs.infer(ModelRef(RANKER), {RANKER_INPUT: np.zeros((3, 76), np.float32)})
        with pytest.raises(BadInput, match="dtype float64"):
            await tfs.infer(ModelRef(RANKER), {RANKER_INPUT: np.zeros((3, 77), np.float64)})


# --- the peer itself speaks TF Serving's API (what the engine relies on, checked with raw stubs) --------


def _raw_tensor(x: np.ndarray, *, as_content: bool) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in x.shape]
        ),
    )
    if as_content:
        proto.tensor_content = x.tobytes()
    else:
        proto.float_val.extend(x.ravel().tolist())
    return proto


async def test_peer_accepts_tensor_content_and_float_val_alike(
    tfserving_peer: TFServingPeer, world_rows: np.ndarray
) -> None:
    x = world_rows[:16]
    async with grpc.aio.insecure_channel(tfserving_peer.url) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answers = []
        for as_content in (True, False):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = RANKER
            request.model_spec.version_label = "stable"
            request.inputs[RANKER_INPUT].CopyFrom(_raw_tensor(x, as_content=as_content))
            reply = await stub.Predict(request, timeout=5)
            assert reply.model_spec.version.value == 1
            assert reply.model_spec.signature_name == "serving_default"
            out = reply.outputs[RANKER_OUTPUT]
            assert out.tensor_content, "the peer answers with tensor_content"
            answers.append(np.frombuffer(out.tensor_content, np.float32).reshape(16, 4))
        np.testing.assert_array_equal(answers[0], answers[1])


def _break(request: predict_pb2.PredictRequest, how: str) -> None:
    if how == "missing_input":
        del request.inputs[RANKER_INPUT]
    elif how == "unknown_model":
        request.model_spec.name = "nope"
    elif how == "unknown_version":
        request.model_spec.version.value = 5
    elif how == "unknown_label":
        request.model_spec.version_label = "x"
    elif how == "unknown_signature":
        request.model_spec.signature_name = "x"
    elif how == "bad_shape":
        request.inputs[RANKER_INPUT].tensor_shape.dim[1].size = 7


@pytest.mark.parametrize(
    ("how", "code", "detail"),
    [
        ("missing_input", grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature"),
        ("unknown_model", grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
        ("unknown_version", grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(feed_ranker, 5)"),
        ("unknown_label", grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: x"),
        ("unknown_signature", grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "x" not found'),
        ("bad_shape", grpc.StatusCode.INVALID_ARGUMENT, "tensor_content holds"),
    ],
)
async def test_peer_errors_use_tf_serving_codes(
    tfserving_peer: TFServingPeer, how: str, code: grpc.StatusCode, detail: str
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = RANKER
    request.inputs[RANKER_INPUT].CopyFrom(_raw_tensor(np.zeros((2, 77), np.float32), as_content=True))
    _break(request, how)
    async with grpc.aio.insecure_channel(tfserving_peer.url) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=5)
    assert raised.value.code() == code
    assert detail in (raised.value.details() or "")


async def test_peer_model_status_and_metadata(tfserving_peer: TFServingPeer) -> None:
    async with grpc.aio.insecure_channel(tfserving_peer.url) as channel:
        status = await model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": RANKER}), timeout=5
        )
        assert [(s.version, s.state) for s in status.model_version_status] == [
            (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
            (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        ]
        meta = await prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec={"name": RANKER, "version_label": "stable"}, metadata_field=["signature_def"]
            ),
            timeout=5,
        )
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    assert list(serving.inputs) == [RANKER_INPUT]
    assert [d.size for d in serving.outputs[RANKER_OUTPUT].tensor_shape.dim] == [-1, 4]
    assert meta.model_spec.version.value == 1
