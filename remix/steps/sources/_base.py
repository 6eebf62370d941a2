"""What every first-pass source shares: retrieve item ids, score them with a first-pass model, keep the best."""

from __future__ import annotations

import abc
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from engines.base import Models
from remix.candidates import Candidates
from remix.context import Context
from remix.corpus import Corpus
from remix.feature_spec import FIRST_PASS_INPUT, FIRST_PASS_OUTPUT, first_pass_features
from remix.keys import Key
from remix.registry import StepParams
from remix.services import Services
from remix.steps._model_call import infer, output
from remix.steps._select import top_k
from remix.steps.keys import QUERY, Query, source_key

ItemTypeName = Literal["post", "article", "job"]


class SourceParams(StepParams):
    """`retrieve`: most ids a source hands to the first-pass model; `limit`: most candidates it writes."""

    model: str = "first_pass"
    limit: int = Field(default=300, gt=0)
    retrieve: int = Field(default=1000, gt=0)

    @model_validator(mode="after")
    def _retrieve_covers_limit(self) -> SourceParams:
        if self.retrieve < self.limit:
            raise ValueError(f"retrieve ({self.retrieve}) must be >= limit ({self.limit})")
        return self


class Source(abc.ABC):
    """A first-pass source step: reads QUERY, writes `source_key(name)`.

    Writes at most `limit` candidates, best first-pass score first; an empty set when retrieval finds
    nothing (then no model is called). The model's 'score' output must be finite, shape (n,) or (n, 1).
    """

    reads: frozenset[Key[Any]] = frozenset({QUERY})
    optional_reads: frozenset[Key[Any]] = frozenset()

    def __init__(self, name: str, params: SourceParams, services: Services) -> None:
        self.name = name
        self.key = source_key(name)
        self.writes: frozenset[Key[Any]] = frozenset({self.key})
        self._params = params
        self._models: Models = services.models
        self._corpus: Corpus = services.corpus

    @abc.abstractmethod
    def retrieve(self, query: Query) -> npt.NDArray[np.int64]:
        """Unique item ids to score, at most `params.retrieve`, in any order. Pure memory work."""

    async def __call__(self, ctx: Context) -> None:
        query = ctx.get(QUERY)
        item_ids = self.retrieve(query)
        corpus = self._corpus
        if len(item_ids) == 0:
            ctx.set(self.key, self._candidates(item_ids, np.empty(0, np.float32)))
            return
        features = first_pass_features(corpus, query.corpus_member, item_ids)
        model = self._params.model
        outputs = await infer(ctx, self.name, self._models, model, {FIRST_PASS_INPUT: features})
        scores = output(outputs, FIRST_PASS_OUTPUT, (len(item_ids),), step=self.name, model=model)
        best = top_k(scores, self._params.limit)
        ctx.set(self.key, self._candidates(item_ids[best], scores[best]))

    def _candidates(self, item_ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float32]) -> Candidates:
        return Candidates.from_source(
            self.name,
            item_id=item_ids,
            item_type=self._corpus.item_type[item_ids],
            author_id=self._corpus.item_author[item_ids],
            first_pass_score=scores,
        )
