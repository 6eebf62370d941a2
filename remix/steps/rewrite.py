"""`rewrite`: normalise and default the request, and attach its sticky experiment bucket."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

from pydantic import Field, field_validator, model_validator

from engines.assignment import assign
from remix.context import Context
from remix.failures import InvalidRequest
from remix.keys import Key
from remix.registry import StepParams, StepType
from remix.steps.keys import EXPERIMENT_BUCKET, QUERY, Query
from remix.steps.services import Services

_LOCALE = re.compile(r"^([a-z]{2,3})(?:[_-]([a-z]{2}))?$")
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
EXPERIMENT_CONTEXT_KEY = "experiment"


class RewriteParams(StepParams):
    """Context keys outside `allowed_context` are dropped (listed in `Query.ignored_context`).

    The bucket is blake2b(f"{salt}:{member_id}") mod len(buckets); a context `experiment` entry naming a
    bucket overrides it only when `allow_experiment_override` is set (otherwise the entry is ignored).
    """

    allowed_context: tuple[str, ...] = ("surface", "locale", "device", EXPERIMENT_CONTEXT_KEY)
    default_surface: str = "feed"
    default_locale: str = "en_US"
    buckets: tuple[str, ...] = Field(default=("control", "treatment"), min_length=1)
    salt: str = "feed"
    allow_experiment_override: bool = False
    default_count: int = Field(default=50, gt=0)
    max_count: int = Field(default=500, gt=0)

    @field_validator("allowed_context", "buckets")
    @classmethod
    def _unique_tokens(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a lowercase token")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate names in {list(names)}")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> RewriteParams:
        if self.default_count > self.max_count:
            raise ValueError(f"default_count {self.default_count} exceeds max_count {self.max_count}")
        _canonical_locale(self.default_locale)  # raises on a bad default
        if not _TOKEN.match(self.default_surface):
            raise ValueError(f"default_surface {self.default_surface!r} is not a lowercase token")
        return self


def _canonical_locale(value: str) -> str:
    """'en-us', 'EN_us', 'en_US' -> 'en_US'; 'fr' -> 'fr'."""
    match = _LOCALE.match(value.strip().lower())
    if match is None:
        raise ValueError(f"locale {value!r} is not of the form ll or ll_CC")
    language, country = match.groups()
    return language if country is None else f"{language}_{country.upper()}"


def experiment_bucket(member_id: int, salt: str, buckets: tuple[str, ...]) -> str:
    """The member's bucket: the same assignment mechanism as route arms and release canaries
    (`engines.assignment`), stable across processes and restarts."""
    return assign(salt, member_id, buckets)


class Rewrite:
    """Reads the request; writes QUERY and EXPERIMENT_BUCKET. Never fails open.

    Context keys and values are trimmed and lowercased (locale is canonicalised to ll_CC). Raises
    InvalidRequest for a non-positive member id, a count outside 0..max_count (0 means default_count),
    two keys equal after normalisation, a malformed locale or value, or an override naming no bucket.
    """

    reads: frozenset[Key[Any]] = frozenset()
    optional_reads: frozenset[Key[Any]] = frozenset()
    writes: frozenset[Key[Any]] = frozenset({QUERY, EXPERIMENT_BUCKET})

    def __init__(self, name: str, params: RewriteParams, services: Services) -> None:
        self.name = name
        self._params = params
        self._allowed = frozenset(params.allowed_context)

    async def __call__(self, ctx: Context) -> None:
        params, request = self._params, ctx.request
        if request.member_id <= 0:
            raise InvalidRequest(f"member_id must be positive, got {request.member_id}", step=self.name)
        if not 0 <= request.count <= params.max_count:
            raise InvalidRequest(f"count must be in 0..{params.max_count}, got {request.count}", step=self.name)

        context: dict[str, str] = {}
        ignored: list[str] = []
        for raw_key, raw_value in request.context.items():
            key, value = raw_key.strip().lower(), raw_value.strip()
            if key in context or key in ignored:
                raise InvalidRequest(f"context key {raw_key!r} given twice (keys are case-insensitive)", step=self.name)
            if key not in self._allowed or (key == EXPERIMENT_CONTEXT_KEY and not params.allow_experiment_override):
                ignored.append(key)
                continue
            context[key] = self._normalise(key, value)

        context.setdefault("surface", params.default_surface)
        context.setdefault("locale", params.default_locale)
        bucket = context.get(EXPERIMENT_CONTEXT_KEY) or experiment_bucket(
            request.member_id, params.salt, params.buckets
        )
        query = Query(
            member_id=request.member_id,
            count=request.count or params.default_count,
            surface=context["surface"],
            locale=context["locale"],
            context=MappingProxyType(context),
            ignored_context=tuple(sorted(ignored)),
            experiment_bucket=bucket,
        )
        ctx.set(QUERY, query)
        ctx.set(EXPERIMENT_BUCKET, bucket)

    def _normalise(self, key: str, value: str) -> str:
        if key == "locale":
            try:
                return _canonical_locale(value)
            except ValueError as error:
                raise InvalidRequest(f"context {error}", step=self.name) from None
        value = value.lower()
        if not _TOKEN.match(value):
            raise InvalidRequest(
                f"context {key}={value!r}: expected 1-64 of [a-z0-9_.-], starting with a letter or digit",
                step=self.name,
            )
        if key == EXPERIMENT_CONTEXT_KEY and value not in self._params.buckets:
            raise InvalidRequest(
                f"context experiment={value!r} names no bucket (buckets: {', '.join(self._params.buckets)})",
                step=self.name,
            )
        return value


REWRITE = StepType("rewrite", RewriteParams, Rewrite)
