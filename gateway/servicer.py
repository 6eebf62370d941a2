"""FeedService servicer: converts, delegates to the app, maps errors. No ranking logic here."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import grpc

from gateway.admission import Admission
from gateway.app import FeedApp
from gateway.convert import DEFAULT_WORKFLOW, RequestLimits, to_feed_request, to_response
from gateway.logs import ACCESS_LOGGER
from gateway.status import Aborter, deadline_expired_on_arrival, to_status
from gateway.tracing import current_trace_id
from quasar.v1 import feed_pb2, feed_pb2_grpc

log = logging.getLogger(ACCESS_LOGGER)

# Time kept back from the caller's deadline to serialise and send the answer before it expires.
_RESPONSE_MARGIN_S = 0.002


class FeedServicer(feed_pb2_grpc.FeedServiceServicer):
    def __init__(
        self,
        app: FeedApp,
        limits: RequestLimits,
        admission: Admission,
        *,
        access_log: bool = True,
        aborter: Aborter | None = None,
    ) -> None:
        """`aborter`: the server's one abort path (default: a private one)."""
        self._app = app
        self._aborter = aborter or Aborter()
        self._access_log = access_log
        self._limits = limits
        self._admission = admission

    async def GetFeed(
        self, request: feed_pb2.GetFeedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> feed_pb2.GetFeedResponse:
        started = time.perf_counter()
        request_id = request.request_id or "-"
        served = self._app.workflow_names
        # Metric labels must stay bounded: a workflow name the client invented is not one.
        workflow = request.workflow or DEFAULT_WORKFLOW
        if workflow not in served:
            workflow = "_unknown"
        outcome = "ok"
        release = arm = ""
        mean_score: float | None = None
        try:
            # Admission reads the caller before any await: a call over the limit or already expired costs no work.
            async with self._admission.admit(context) as ticket:
                feed_request = to_feed_request(request, self._limits, served)
                request_id = feed_request.request_id
                feed_request = replace(
                    feed_request,
                    quality=ticket.quality,
                    yield_between_steps=ticket.yield_between_steps,
                    caller_gone=context.cancelled,
                )
                answer = await self._app.get_feed(feed_request, timeout_s=_timeout_s(context))
                outcome = "degraded" if answer.context.degraded else "ok"
                response = to_response(
                    answer.context,
                    answer.feed,
                    workflow_version=answer.workflow_version,
                    server_ms=(time.perf_counter() - started) * 1e3,
                )
                release, arm = response.release, response.arm  # what served the answer, computed once there
                if release and answer.feed.utility is not None and len(answer.feed):
                    mean_score = float(answer.feed.utility.mean())
                return response
        except Exception as error:
            status = to_status(error, request_id)
            outcome = status.code.name
            await self._aborter.abort(context, error, method="GetFeed", request_id=request_id, status=status)
        finally:
            self._app.metrics.workflow_requests.labels(workflow, outcome).inc()
            if release:
                self._app.metrics.observe_arm(release, arm, outcome, time.perf_counter() - started, mean_score)
            if self._access_log:
                log.info(
                    "GetFeed",
                    extra={
                        "request_id": request_id,
                        "member_id": request.member_id,
                        "workflow": workflow,
                        "outcome": outcome,
                        "release": release,
                        "arm": arm,
                        "latency_ms": round((time.perf_counter() - started) * 1e3, 3),
                        "trace_id": current_trace_id(),
                    },
                )


def _timeout_s(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    if remaining <= _RESPONSE_MARGIN_S:
        raise deadline_expired_on_arrival()
    return float(remaining) - _RESPONSE_MARGIN_S
