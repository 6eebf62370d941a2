"""`source.trending`: the globally most popular recent items, personalised by the first-pass model."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from pydantic import Field

from remix.registry import StepType
from remix.services import Services
from remix.steps._select import top_k, type_codes
from remix.steps.keys import Query
from remix.steps.sources._base import ItemTypeName, Source, SourceParams


class TrendingParams(SourceParams):
    """Trend = popularity decayed by age: log1p(popularity) - ln2 * age_hours / half_life_hours.

    The `retrieve` best items of `item_types` are scored; `limit` kept.
    """

    limit: int = Field(default=150, gt=0)
    retrieve: int = Field(default=500, gt=0)
    half_life_hours: float = Field(default=24.0, gt=0)
    item_types: tuple[ItemTypeName, ...] = Field(default=("article", "post"), min_length=1)


class TrendingSource(Source):
    """The trending list is the same for every member and computed once, at build time."""

    def __init__(self, name: str, params: TrendingParams, services: Services) -> None:
        super().__init__(name, params, services)
        corpus = self._corpus
        eligible = np.flatnonzero(np.isin(corpus.item_type, type_codes(params.item_types))).astype(np.int64)
        eligible = eligible[eligible > 0]
        trend = np.log1p(np.asarray(corpus.item_popularity[eligible], dtype=np.float64)) - (
            math.log(2.0) * np.asarray(corpus.item_age_hours[eligible], dtype=np.float64) / params.half_life_hours
        )
        self._trending: npt.NDArray[np.int64] = eligible[top_k(trend, params.retrieve)]

    def retrieve(self, query: Query) -> npt.NDArray[np.int64]:
        return self._trending


TRENDING = StepType("source.trending", TrendingParams, TrendingSource)
