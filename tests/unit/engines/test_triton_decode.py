"""Reading Triton's ModelInferResponse: raw contents to arrays, and malformed replies to BadOutput."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from engines.errors import BadOutput
from engines.triton import _decode_outputs

WHERE = {"target": "triton", "model": "ranker"}


def _response(*tensors: tuple[str, str, list[int], bytes]) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(model_name="ranker")
    for name, datatype, shape, data in tensors:
        response.outputs.add(name=name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(data)
    return response


def test_raw_outputs_become_read_only_arrays_of_their_declared_type_and_shape() -> None:
    scores = np.arange(6, dtype="<f4").reshape(3, 2)
    ids = np.array([7, 8, 9], dtype="<i8")
    outputs = _decode_outputs(
        _response(("scores", "FP32", [3, 2], scores.tobytes()), ("ids", "INT64", [3], ids.tobytes())), **WHERE
    )
    assert set(outputs) == {"scores", "ids"}
    decoded = outputs["scores"]
    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == np.float32
    assert decoded.shape == (3, 2)
    np.testing.assert_array_equal(decoded, scores)
    np.testing.assert_array_equal(outputs["ids"], ids)
    assert not decoded.flags.writeable  # a view of the reply, never copied


def test_contents_that_do_not_fill_the_shape_are_bad_output() -> None:
    with pytest.raises(BadOutput, match=r"'scores' cannot be decoded: 8 bytes for shape \[3, 2\] of FP32"):
        _decode_outputs(_response(("scores", "FP32", [3, 2], b"\0" * 8)), **WHERE)


def test_a_datatype_that_is_not_raw_is_bad_output() -> None:
    with pytest.raises(BadOutput, match="'names' has datatype BYTES"):
        _decode_outputs(_response(("names", "BYTES", [1], b"\0\0\0\1a")), **WHERE)


def test_raw_contents_not_one_per_output_are_bad_output() -> None:
    response = _response(("scores", "FP32", [1], b"\0" * 4))
    response.outputs.add(name="extra", datatype="FP32", shape=[1])
    with pytest.raises(BadOutput, match="1 raw_output_contents for 2 outputs") as raised:
        _decode_outputs(response, **WHERE)
    assert raised.value.target == "triton"
