"""The tensor codec refuses absurd tensors with INVALID_ARGUMENT instead of failing inside numpy."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2, service_pb2

from engines.types import TensorSpec
from gateway.status import RequestRejected
from gateway.tensor_codec import config_datatype, decode_inputs, tensor_metadata


def typed(datatype: str, field: str, values: list[int]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[len(values)])
    getattr(tensor.contents, field).extend(values)
    return request


def raw(shape: list[int], data: bytes = b"", datatype: str = "FP32") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    request.raw_input_contents.append(data)
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (typed("UINT8", "uint_contents", [1, 300]), r"outside UINT8's range \[0, 255\]"),
        (typed("INT8", "int_contents", [-129]), r"outside INT8's range \[-128, 127\]"),
        (typed("INT16", "int_contents", [1 << 20]), "outside INT16's range"),
        (raw([0, 1 << 62]), r"shape \[0, 4611686018427387904\]: far larger than any request can carry"),
        (raw([0] * 40), "has 40 dimensions; at most 32 are supported"),
        (raw([-1, 2]), "dimensions must be >= 0"),
        (raw([2], b"\x00" * 7), r"7 bytes of raw contents; shape \[2\] of FP32 needs 8"),
        (raw([1], np.array([np.inf], "<f4").tobytes()), "holds 1 non-finite values of 1"),
        (raw([1], b"\x00\x00", "BF16"), "datatype 'BF16'; supported"),
    ],
    ids=["uint8", "int8", "int16", "huge-empty", "rank", "negative", "bytes", "inf", "bf16"],
)
def test_absurd_tensors_are_invalid_argument(request_: service_pb2.ModelInferRequest, message: str) -> None:
    with pytest.raises(RequestRejected, match=message) as raised:
        decode_inputs(request_)
    assert raised.value.code.name == "INVALID_ARGUMENT"


def test_in_range_typed_values_keep_the_tensor_dtype() -> None:
    decoded = decode_inputs(typed("UINT8", "uint_contents", [0, 255]))["x"]
    assert decoded.dtype == np.uint8
    assert decoded.tolist() == [0, 255]


def test_an_empty_tensor_with_sane_dimensions_decodes() -> None:
    assert decode_inputs(raw([0, 8]))["x"].shape == (0, 8)


def test_signature_datatypes_as_the_protocol_names_them() -> None:
    spec = TensorSpec(name="features", dtype="float32", shape=(-1, 8))
    assert tensor_metadata(spec).datatype == "FP32"
    assert config_datatype(spec) == model_config_pb2.TYPE_FP32
