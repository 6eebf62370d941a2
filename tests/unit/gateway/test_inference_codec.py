"""The Open Inference Protocol servicer's tensor codec: request raw contents in, response raw contents out."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from gateway.inference_servicer import decode_inputs, encode_outputs, requested_outputs
from gateway.status import RequestRejected


def _request(name: str, datatype: str, shape: list[int], data: bytes) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="feed_ranker")
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(data)
    return request


def test_outputs_are_sent_as_little_endian_bytes_whatever_the_arrays_byte_order() -> None:
    scores = np.array([[0.25, -1.5]], dtype=np.float32)
    native, big = service_pb2.ModelInferResponse(), service_pb2.ModelInferResponse()
    encode_outputs({"scores": scores}, [], native)
    encode_outputs({"scores": scores.astype(">f4")}, [], big)
    for response in (native, big):
        assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("scores", "FP32", [1, 2])]
        assert response.raw_output_contents[0] == scores.astype("<f4").tobytes()


def test_only_the_requested_outputs_are_sent_in_the_order_asked() -> None:
    response = service_pb2.ModelInferResponse()
    outputs = {"a": np.zeros(1, np.float32), "b": np.ones(2, np.int64)}
    encode_outputs(outputs, ["b"], response)
    assert [o.name for o in response.outputs] == ["b"]
    assert np.frombuffer(response.raw_output_contents[0], "<i8").tolist() == [1, 1]


def test_an_unknown_requested_output_is_invalid_argument() -> None:
    with pytest.raises(RequestRejected, match=r"requested outputs \['nope'\] do not exist"):
        encode_outputs({"a": np.zeros(1, np.float32)}, ["nope"], service_pb2.ModelInferResponse())


def test_raw_inputs_decode_to_native_views_and_bad_sizes_are_refused() -> None:
    rows = np.arange(6, dtype="<f4").reshape(2, 3)
    decoded = decode_inputs(_request("features", "FP32", [2, 3], rows.tobytes()))["features"]
    assert decoded.dtype == np.float32
    assert decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, rows)
    with pytest.raises(RequestRejected, match=r"20 bytes of raw contents; shape \[2, 3\] of FP32 needs 24"):
        decode_inputs(_request("features", "FP32", [2, 3], rows.tobytes()[:20]))


def test_output_parameters_for_shared_memory_are_refused() -> None:
    request = service_pb2.ModelInferRequest(model_name="feed_ranker")
    request.outputs.add(name="plain")
    asked = request.outputs.add(name="scores")
    asked.parameters["shared_memory_region"].string_param = "region0"
    with pytest.raises(RequestRejected, match=r"output 'scores': parameters \['shared_memory_region'\]"):
        requested_outputs(request)
    del request.outputs[1]
    assert requested_outputs(request) == ["plain"]
