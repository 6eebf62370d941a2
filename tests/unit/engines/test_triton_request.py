"""Writing Triton's ModelInferRequest: the body serialized by hand parses to the message protobuf would build."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from engines.triton import _serialized_request, _Served, _varint
from engines.types import ModelMetadata, TensorSpec

META = ModelMetadata(
    name="ranker",
    version="1",
    inputs=(TensorSpec("features", "float32", (-1, 77)), TensorSpec("ids", "int64", (-1,))),
    outputs=(TensorSpec("scores", "float32", (-1, 4)), TensorSpec("rank", "int32", (-1,))),
)
SERVED = _Served(
    remote="feed_ranker",
    metadata=META,
    max_batch_size=0,
    versions=("1",),
    input_datatypes=("FP32", "INT64"),
    request_head=service_pb2.ModelInferRequest(
        model_name="feed_ranker", outputs=[{"name": "scores"}, {"name": "rank"}]
    ).SerializeToString(),
)


def _built_by_protobuf(version: str | None, inputs: dict[str, np.ndarray]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="feed_ranker", model_version=version or "")
    for spec, datatype in zip(META.inputs, SERVED.input_datatypes, strict=True):
        request.inputs.add(name=spec.name, datatype=datatype, shape=inputs[spec.name].shape)
        value = inputs[spec.name]
        request.raw_input_contents.append(value.astype(value.dtype.newbyteorder("<")).tobytes())
    for spec in META.outputs:
        request.outputs.add(name=spec.name)
    return request


@pytest.mark.parametrize("rows", [0, 1, 3, 500])
@pytest.mark.parametrize("version", [None, "2"])
def test_the_body_parses_to_the_request_protobuf_builds(rows: int, version: str | None) -> None:
    inputs = {
        "features": np.arange(rows * 77, dtype=np.float32).reshape(rows, 77),
        "ids": np.arange(rows, dtype=np.int64),
    }
    body = _serialized_request(SERVED, version, inputs)
    assert service_pb2.ModelInferRequest.FromString(body) == _built_by_protobuf(version, inputs)


def test_strided_and_big_endian_tensors_go_out_as_little_endian_c_order() -> None:
    features = np.arange(2 * 154, dtype=">f4").reshape(2, 154)[:, ::2]  # neither contiguous nor little endian
    ids = np.array([7, 8], dtype=np.int64)
    body = _serialized_request(SERVED, None, {"features": features, "ids": ids})
    parsed = service_pb2.ModelInferRequest.FromString(body)
    assert parsed.raw_input_contents[0] == np.ascontiguousarray(features, dtype="<f4").tobytes()
    assert np.frombuffer(parsed.raw_input_contents[1], "<i8").tolist() == [7, 8]


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"), (154_000, b"\x90\xb3\x09")],
)
def test_lengths_are_protobuf_varints(value: int, encoded: bytes) -> None:
    assert _varint(value) == encoded
