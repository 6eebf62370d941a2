"""The ONE table mapping errors to gRPC status codes. Clients never see stack traces."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from remix.failures import Category, WorkflowError, classify


class RequestRejected(Exception):
    """The gateway refuses a request before running any workflow (validation, admission, draining)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid_argument(message: str) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.INVALID_ARGUMENT, message)


def overloaded(message: str) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def unavailable(message: str) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.UNAVAILABLE, message)


_BY_CATEGORY: dict[Category, grpc.StatusCode] = {
    Category.CLIENT: grpc.StatusCode.INVALID_ARGUMENT,
    Category.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    Category.DEPENDENCY: grpc.StatusCode.UNAVAILABLE,
    Category.INTERNAL: grpc.StatusCode.INTERNAL,
}


@dataclass(frozen=True)
class MappedStatus:
    code: grpc.StatusCode
    message: str


def to_status(error: BaseException, request_id: str) -> MappedStatus:
    """Status for any error raised while serving a request. Internal errors hide their text."""
    if isinstance(error, RequestRejected):
        return MappedStatus(error.code, str(error))
    category = classify(error)
    code = _BY_CATEGORY[category]
    if category is Category.INTERNAL:
        return MappedStatus(code, f"internal error (request_id={request_id}); the server log has details")
    detail = str(error) if isinstance(error, WorkflowError) else f"{type(error).__name__}: {error}"
    if category is Category.TIMEOUT:
        return MappedStatus(code, f"deadline cannot be met: {detail}")
    return MappedStatus(code, detail)
