"""The status -> engine error table the gRPC engines share, and TF Serving's one exception to it."""

from __future__ import annotations

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from engines._grpc import engine_error
from engines.errors import (
    BadInput,
    EngineError,
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    ModelNotFound,
)
from engines.tfserving import _translate as tfserving_error


def rpc_error(code: grpc.StatusCode, details: str = "details") -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details=details)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, EngineUnavailable),
        (grpc.StatusCode.CANCELLED, EngineUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, EngineTimeout),
        (grpc.StatusCode.NOT_FOUND, ModelNotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, BadInput),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, EngineOverloaded),
        (grpc.StatusCode.INTERNAL, EngineError),
    ],
)
def test_each_status_becomes_its_engine_error_keeping_status_and_place(
    code: grpc.StatusCode, expected: type[EngineError]
) -> None:
    error = engine_error(rpc_error(code, "boom"), 0.05, target="triton", model="ranker")
    assert type(error) is expected
    assert f"{code.name}: boom" in str(error)
    assert (error.target, error.model) == ("triton", "ranker")


def test_a_timeout_says_how_long_was_waited() -> None:
    error = engine_error(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), 0.05, target="t", model="m")
    assert "no answer within 0.05s" in str(error)


def test_tf_serving_unknown_version_label_is_a_missing_model_other_bad_arguments_are_bad_input() -> None:
    label = rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary")
    assert type(tfserving_error(label, 1.0, target="tfs", model="ranker")) is ModelNotFound
    shape = rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "input shape mismatch")
    assert type(tfserving_error(shape, 1.0, target="tfs", model="ranker")) is BadInput
