"""`source.hashtags`: recent items carrying hashtags the member follows."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import Field

from remix.registry import StepType
from remix.services import Services
from remix.steps._csr import gather, invert
from remix.steps._select import type_codes
from remix.steps.keys import Query
from remix.steps.sources._base import ItemTypeName, Source, SourceParams


class HashtagsParams(SourceParams):
    """The `per_hashtag` newest items of `item_types` for each followed hashtag. When more than `retrieve`
    distinct items match, those matching the most followed hashtags, then the newest, are scored."""

    per_hashtag: int = Field(default=50, gt=0)
    item_types: tuple[ItemTypeName, ...] = Field(default=("post",), min_length=1)


class HashtagsSource(Source):
    """The inverted index hashtag -> items (newest first) is built once, at build time, from the corpus."""

    def __init__(self, name: str, params: HashtagsParams, services: Services) -> None:
        super().__init__(name, params, services)
        corpus = self._corpus
        indptr = np.asarray(corpus.item_hashtags_indptr, dtype=np.int64)
        items = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        tags = np.asarray(corpus.item_hashtags_indices, dtype=np.int64)
        keep = np.isin(corpus.item_type[items], type_codes(params.item_types)) & (items > 0)
        items, tags = items[keep], tags[keep]
        self._tag_indptr, self._tag_items = invert(items, tags, corpus.n_hashtags + 1, corpus.item_age_hours[items])
        self._per_hashtag = params.per_hashtag
        self._retrieve = params.retrieve

    def retrieve(self, query: Query) -> npt.NDArray[np.int64]:
        corpus = self._corpus
        followed = np.asarray(corpus.followed_hashtags(query.corpus_member), dtype=np.int64)
        followed = followed[followed < len(self._tag_indptr) - 1]
        matches, _ = gather(self._tag_indptr, self._tag_items, followed, self._per_hashtag)
        item_ids, matched_tags = np.unique(matches, return_counts=True)
        if len(item_ids) > self._retrieve:
            best = np.lexsort((corpus.item_age_hours[item_ids], -matched_tags))[: self._retrieve]
            item_ids = item_ids[best]
        return np.asarray(item_ids, dtype=np.int64)


HASHTAGS = StepType("source.hashtags", HashtagsParams, HashtagsSource)
