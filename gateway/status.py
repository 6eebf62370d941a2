"""The ONE table mapping errors to gRPC status codes, and the one path by which every servicer aborts.

Clients never see stack traces, Python class names of internal errors, or file paths: an internal error
answers INTERNAL with the request id only, and its traceback goes to the server log (rate limited).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from gateway.rate_limited_log import RateLimitedLog
from remix.failures import Category, WorkflowError, classify

log = logging.getLogger(__name__)


class RequestRejected(Exception):
    """The gateway refuses a request before (or instead of) running it: validation, admission, auth, draining."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid_argument(message: str) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.INVALID_ARGUMENT, message)


def overloaded(message: str) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def unavailable(message: str) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.UNAVAILABLE, message)


def not_found(message: str) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.NOT_FOUND, message)


def unauthenticated(message: str) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.UNAUTHENTICATED, message)


def failed_precondition(message: str) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.FAILED_PRECONDITION, message)


def unimplemented(message: str) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.UNIMPLEMENTED, message)


def aborted(message: str) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.ABORTED, message)


def deadline_expired_on_arrival() -> RequestRejected:
    return RequestRejected(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline already expired on arrival")


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
    detail = str(error) if isinstance(error, WorkflowError) else f"{getattr(error, 'reason', category.value)}: {error}"
    if category is Category.TIMEOUT:
        return MappedStatus(code, f"deadline cannot be met: {detail}")
    return MappedStatus(code, detail)


class Aborter:
    """The one way every servicer (FeedService, the inference protocol, AdminService) and the decode guard
    end a call with an error: map it with `to_status`, log it when it is internal, abort the call.

    Internal errors are logged at ERROR with their traceback, but at most once per method per interval
    (`internal_log`), with a count of those suppressed: a client that found a way to trigger one must not
    be able to flood the log with it. Every other error is the client's or a dependency's and is not
    logged here (the access log and metrics record outcomes).
    """

    def __init__(self, internal_log: RateLimitedLog | None = None) -> None:
        self._internal_log = internal_log or RateLimitedLog(log)

    async def abort(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        error: BaseException,
        *,
        method: str,
        request_id: str = "-",
        status: MappedStatus | None = None,
    ) -> NoReturn:
        """Abort the call with `status` (default: `to_status(error, request_id)`); never returns.

        `method` names the RPC in the log line (and is the rate-limiting kind: a bounded set).
        """
        status = status or to_status(error, request_id)
        if status.code is grpc.StatusCode.INTERNAL:
            self._internal_log.error(
                f"internal:{method}", f"{method} failed", exc_info=error, extra={"request_id": request_id}
            )
        await context.abort(status.code, status.message)
        raise AssertionError("unreachable: abort raises") from error
