"""Wire ↔ domain conversion for FeedService, including request validation."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from gateway.status import invalid_argument
from quasar.v1 import feed_pb2
from remix.context import Context
from remix.request import FeedRequest
from remix.steps.candidates import Candidates

_MAX_REQUEST_ID_CHARS = 128
DEFAULT_WORKFLOW = "feed"  # served when a request names none


@dataclass(frozen=True)
class RequestLimits:
    default_count: int
    max_count: int
    max_context_entries: int
    max_context_bytes: int


def to_feed_request(message: feed_pb2.GetFeedRequest, limits: RequestLimits, workflows: Collection[str]) -> FeedRequest:
    """Validate a GetFeedRequest; every problem raises INVALID_ARGUMENT naming the field and the rule."""
    if message.member_id <= 0:
        raise invalid_argument(f"member_id must be a positive integer, got {message.member_id}")
    count = message.count or limits.default_count
    if count < 0 or count > limits.max_count:
        raise invalid_argument(f"count must be between 1 and {limits.max_count}, got {message.count}")
    workflow = message.workflow or DEFAULT_WORKFLOW
    if workflow not in workflows:
        raise invalid_argument(f"unknown workflow {workflow!r}; served workflows: {', '.join(sorted(workflows))}")
    if len(message.context) > limits.max_context_entries:
        raise invalid_argument(
            f"context has {len(message.context)} entries, at most {limits.max_context_entries} are allowed"
        )
    context_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in message.context.items())
    if context_bytes > limits.max_context_bytes:
        raise invalid_argument(f"context is {context_bytes} bytes, at most {limits.max_context_bytes} are allowed")
    if len(message.request_id) > _MAX_REQUEST_ID_CHARS:
        raise invalid_argument(f"request_id is longer than {_MAX_REQUEST_ID_CHARS} characters")
    return FeedRequest(
        request_id=message.request_id or uuid.uuid4().hex,
        member_id=message.member_id,
        count=count,
        workflow=workflow,
        context=dict(message.context),
        debug=message.debug,
    )


def to_response(ctx: Context, feed: Candidates, *, workflow_version: str, server_ms: float) -> feed_pb2.GetFeedResponse:
    """Build the response from the final feed. Work is per returned item (≤ count), never per candidate.

    Items are added in place (`items.add`), not built apart and copied in; each distinct source mask is
    turned into names once.
    """
    response = feed_pb2.GetFeedResponse(
        request_id=ctx.request.request_id,
        degraded=ctx.degraded,
        degraded_reasons=[failure.reason for failure in ctx.failures],
        workflow=ctx.request.workflow,
        workflow_version=workflow_version,
        # One entry per distinct model use: several sources may call the same first-pass model.
        model_versions=[
            feed_pb2.ModelVersion(model=model, target=target, version=version)
            for model, target, version in dict.fromkeys((use.model, use.target, use.version) for use in ctx.models)
        ],
        server_ms=server_ms,
    )
    response.release, response.arm = ctx.serving.attribution(use.model for use in ctx.models)
    objectives = feed.objectives
    utility = (feed.utility if feed.utility is not None else feed.first_pass_score).tolist()
    scores = feed.scores.tolist() if feed.scores is not None else None
    masks, first_rows = np.unique(feed.sources_mask, return_index=True)
    sources = {mask: feed.source_list(row) for mask, row in zip(masks.tolist(), first_rows.tolist(), strict=True)}
    columns = zip(
        feed.item_id.tolist(),
        feed.item_type.tolist(),  # ItemType values mirror the proto enum
        feed.source.tolist(),
        feed.sources_mask.tolist(),
        feed.author_id.tolist(),
        utility,
        strict=True,
    )
    for row, (item_id, item_type, primary, mask, author_id, score) in enumerate(columns):
        item = response.items.add(
            item_id=item_id,
            item_type=item_type,
            source=feed.source_names[primary],
            sources=sources[mask],
            author_id=author_id,
            score=score,
        )
        if scores is not None:
            for name, value in zip(objectives, scores[row], strict=True):
                item.objective_scores.add(objective=name, score=value)
    if ctx.request.debug:
        response.trace.extend(
            feed_pb2.StepTrace(
                name=entry.name,
                outcome=entry.outcome.value,
                elapsed_ms=entry.elapsed_ms,
                budget_left_ms=-1.0 if entry.budget_left_ms is None else entry.budget_left_ms,
                detail=entry.detail,
            )
            for entry in ctx.trace.entries
        )
    return response
