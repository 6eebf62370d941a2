"""The one error -> gRPC status table: codes by who is responsible, and no internals in messages."""

from __future__ import annotations

import grpc
import pytest

from engines.errors import EngineTimeout, EngineUnavailable
from gateway.status import invalid_argument, to_status
from remix.failures import InvalidRequest, StepTimeout


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (invalid_argument("count must be between 1 and 500"), "INVALID_ARGUMENT", "count must be between 1 and 500"),
        (InvalidRequest("bad context", step="rewrite"), "INVALID_ARGUMENT", "rewrite: bad context"),
        (StepTimeout("out of budget", step="rank"), "DEADLINE_EXCEEDED", "deadline cannot be met: rank: out of budget"),
        (EngineTimeout("slow", target="t"), "DEADLINE_EXCEEDED", "deadline cannot be met: timed out: [t] slow"),
        (EngineUnavailable("down", target="triton"), "UNAVAILABLE", "unavailable: [triton] down"),
    ],
)
def test_known_errors_keep_their_message(error: Exception, code: str, message: str) -> None:
    status = to_status(error, "req-1")
    assert status.code is grpc.StatusCode[code]
    assert status.message.startswith(message)


def test_an_internal_error_names_the_request_but_never_its_text() -> None:
    status = to_status(KeyError("secret internal detail"), "req-42")
    assert status.code is grpc.StatusCode.INTERNAL
    assert status.message == "internal error (request_id=req-42); the server log has details"
    assert "secret" not in status.message
