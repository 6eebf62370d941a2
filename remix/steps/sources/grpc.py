"""`source.grpc`: a remote candidate service (`quasar.v1.CandidateService`), any team's, any language.
The outgoing deadline is the step's remaining budget; the service's order is kept for the first pass."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from features.errors import nearest
from remix.context import Context
from remix.keys import Key
from remix.registry import StepType
from remix.steps.keys import QUERY
from remix.steps.remote import RemoteCandidates
from remix.steps.services import Services
from remix.steps.sources._base import I64, DeclaredSource, Retriever, SourceParams


class GrpcParams(SourceParams):
    """`service`: a configured candidate service (engines config `candidate_services`)."""

    service: str = Field(min_length=1)


class GrpcRetriever:
    reads: frozenset[Key[Any]] = frozenset({QUERY})
    tables: frozenset[str] = frozenset()  # the remote service reads its own

    def __init__(self, step: str, params: GrpcParams, services: Services) -> None:
        client = services.candidate_services.get(params.service)
        if client is None:
            raise ValueError(
                f"step {step!r}: no candidate service {params.service!r} is configured"
                f"{nearest(params.service, services.candidate_services)}"
            )
        self._client: RemoteCandidates = client
        self._step = step

    async def retrieve(self, ctx: Context, *, limit: int) -> I64:
        query = ctx.get(QUERY)
        ids, _ = await self._client.retrieve(
            query.member_id,
            limit=limit,
            context=query.context,
            source=self._step,
            request_id=ctx.request.request_id,
            timeout_s=ctx.budget.remaining_s(),
        )
        return ids  # the client refuses an answer with repeats, negative ids or more than `limit`


def _build(name: str, params: GrpcParams, services: Services) -> DeclaredSource:
    return DeclaredSource(name, params, services, GrpcRetriever(name, params, services))


GRPC = StepType("source.grpc", GrpcParams, _build)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a workflow
    _conforms: type[Retriever] = GrpcRetriever
