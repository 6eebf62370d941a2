"""`filter`: drops candidates by predicates over declared features (low quality, policy violations, an
author the member blocked), counted per rule in the step's trace entry."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.registry import feature_width
from remix.context import Context
from remix.keys import Key
from remix.registry import StepParams, StepType
from remix.steps.keys import CANDIDATE_KEYS, FILTERED
from remix.steps.scoring import DeclaredInputs, resolve_features
from remix.steps.services import Services

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "eq": operator.eq,
    "ne": operator.ne,
}


class Rule(BaseModel):
    """Drop a candidate when `feature` `op` `value` holds (a scalar feature; the declared default applies to
    a candidate without a row)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    feature: str = Field(min_length=1)
    op: Literal["gt", "ge", "lt", "le", "eq", "ne"]
    value: float


class FilterParams(StepParams):
    candidates: Literal["merged"] = "merged"
    rules: list[Rule] = Field(min_length=1)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate rule names in {names}")
        return rules


class Filter:
    """Reads the candidate set and what its features need; writes FILTERED (kept rows, in order). The
    trace entry says how many each rule dropped (a row several rules match counts for the first)."""

    optional_reads: frozenset[Key[Any]] = frozenset()
    writes: frozenset[Key[Any]] = frozenset({FILTERED})

    def __init__(self, name: str, params: FilterParams, services: Services) -> None:
        self.name = name
        self._rules = params.rules
        features = resolve_features(services, [r.feature for r in params.rules], step=name)
        for rule, feature in zip(params.rules, features, strict=True):
            width = feature_width(feature)
            if width != 1:
                raise ValueError(
                    f"step {name!r}: rule {rule.name!r} needs a scalar feature, {rule.feature!r} is {width} wide"
                )
        self._inputs = DeclaredInputs(services, features, step=name)
        self._candidates = CANDIDATE_KEYS[params.candidates]
        self.reads: frozenset[Key[Any]] = self._inputs.reads | {self._candidates}
        self.tables = self._inputs.tables

    async def __call__(self, ctx: Context) -> None:
        candidates = ctx.get(self._candidates)
        if len(candidates) == 0:
            ctx.set(FILTERED, candidates)
            return
        frame, _ = await self._inputs.frame(ctx, candidates.item_id, {"first_pass_score": candidates.first_pass_score})
        dropped = np.zeros(len(candidates), dtype=np.bool_)
        counts = []
        for rule in self._rules:
            hit = _OPS[rule.op](frame.get(rule.feature)[:, 0], rule.value) & ~dropped
            counts.append(f"{rule.name} {int(hit.sum())}")
            dropped |= hit
        ctx.set(FILTERED, candidates.take(np.flatnonzero(~dropped)))
        ctx.notes[self.name] = f"dropped {int(dropped.sum())} of {len(candidates)}: {', '.join(counts)}"


FILTER = StepType("filter", FilterParams, Filter)
