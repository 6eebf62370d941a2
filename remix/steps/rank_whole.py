"""`rank.whole_model`: the second pass with the embedding tables inside the model (no store lookups).

The same multi-task ranker as `rank`, exported whole (`quasar.demo.onnx_export.build_whole_model_onnx`):
it takes raw ids and gathers from its own tables, so it needs no key-value store. As the fallback of `rank`
it keeps real second-pass scores while the store is down, slow, or serving versions the model refuses.
For the same request both modes score alike (within 1e-5): a missing id is a zero vector in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator

from engines.base import Models
from remix.context import Context
from remix.feature_spec import OBJECTIVES, RANKER_OUTPUT, dense_features, hashtag_ids
from remix.keys import Key
from remix.registry import StepParams, StepType
from remix.services import Services
from remix.steps._model_call import infer, output
from remix.steps.keys import EMBEDDINGS_MISSING, MEMBER_FEATURES, MERGED, QUERY, RANKED
from remix.steps.rank import RankParams, by_utility, weight_vector

MEMBER_ID, ITEM_ID, AUTHOR_ID = "member_id", "item_id", "author_id"
HASHTAG_IDS, HASHTAG_MASK, DENSE = "hashtag_ids", "hashtag_mask", "dense"
WHOLE_MODEL_INPUTS: tuple[str, ...] = (MEMBER_ID, ITEM_ID, AUTHOR_ID, HASHTAG_IDS, HASHTAG_MASK, DENSE)
"""Inputs of a whole model: int64 [n] ids (the member's repeated on every row), int64 [n, max_tags] hashtag
ids padded with anything, float32 [n, max_tags] mask (1 = a real hashtag), float32 [n, len(DENSE_FEATURES)]
raw dense features. Output: `RANKER_OUTPUT`, probabilities [n, len(OBJECTIVES)]."""


class RankWholeParams(StepParams):
    """`model`: the whole model's logical name; `weights` as for `rank` (the same validation)."""

    model: str = "feed_ranker_whole"
    weights: dict[str, float] = Field(default_factory=lambda: dict(RankParams().weights))

    @field_validator("weights")
    @classmethod
    def _as_rank(cls, weights: dict[str, float]) -> dict[str, float]:
        return RankParams(weights=weights).weights


@dataclass(frozen=True)
class PaddedIds:
    ids: npt.NDArray[np.int64]  # [n, width], padding 0
    mask: npt.NDArray[np.float32]  # [n, width], 1.0 where `ids` holds a real id


def pad_csr(flat: npt.NDArray[np.int64], indptr: npt.NDArray[np.int64]) -> PaddedIds:
    """CSR rows as a padded matrix and its mask; width is the longest row (at least 1)."""
    counts = np.diff(indptr)
    width = max(int(counts.max(initial=0)), 1)
    rows = np.repeat(np.arange(len(counts)), counts)
    columns = np.arange(len(flat)) - np.repeat(indptr[:-1], counts)
    ids = np.zeros((len(counts), width), dtype=np.int64)
    mask = np.zeros((len(counts), width), dtype=np.float32)
    ids[rows, columns] = flat
    mask[rows, columns] = 1.0
    return PaddedIds(ids=ids, mask=mask)


class RankWhole:
    """Reads MERGED, QUERY and MEMBER_FEATURES; writes RANKED and EMBEDDINGS_MISSING (empty: no lookups).

    Scores every candidate with the whole model; utility and order as `rank` (utility = scores @ weights,
    descending, ties in MERGED order). A missing, mis-shaped or non-finite output is a DependencyFailure.
    """

    reads: frozenset[Key[Any]] = frozenset({MERGED, QUERY, MEMBER_FEATURES})
    optional_reads: frozenset[Key[Any]] = frozenset()
    writes: frozenset[Key[Any]] = frozenset({RANKED, EMBEDDINGS_MISSING})

    def __init__(self, name: str, params: RankWholeParams, services: Services) -> None:
        self.name = name
        self._model = params.model
        self._weights = weight_vector(params.weights)
        self._models: Models = services.models
        self._corpus = services.corpus

    async def __call__(self, ctx: Context) -> None:
        merged = ctx.get(MERGED)
        n = len(merged)
        ctx.set(EMBEDDINGS_MISSING, MappingProxyType({}))
        if n == 0:
            empty = np.empty((0, len(OBJECTIVES)), np.float32)
            ctx.set(RANKED, merged.with_scores(empty, OBJECTIVES, np.empty(0, np.float32)))
            return
        query = ctx.get(QUERY)
        items = np.asarray(merged.item_id, dtype=np.int64)
        hashtags = pad_csr(*hashtag_ids(self._corpus, items))
        inputs: dict[str, np.ndarray] = {
            MEMBER_ID: np.full(n, query.member_id, dtype=np.int64),
            ITEM_ID: items,
            AUTHOR_ID: np.asarray(merged.author_id, dtype=np.int64),
            HASHTAG_IDS: hashtags.ids,
            HASHTAG_MASK: hashtags.mask,
            DENSE: dense_features(
                self._corpus, query.corpus_member, items, merged.first_pass_score, ctx.get(MEMBER_FEATURES)
            ),
        }
        outputs = await infer(ctx, self.name, self._models, self._model, inputs)
        scores = output(outputs, RANKER_OUTPUT, (n, len(OBJECTIVES)), step=self.name, model=self._model)
        ctx.set(RANKED, by_utility(merged, scores, self._weights))


RANK_WHOLE_MODEL = StepType("rank.whole_model", RankWholeParams, RankWhole)
