"""`source.network`: recent items authored by the member's connections."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import Field

from remix.registry import StepType
from remix.services import Services
from remix.steps._csr import gather
from remix.steps._select import type_codes
from remix.steps.keys import Query
from remix.steps.sources._base import ItemTypeName, Source, SourceParams


class NetworkParams(SourceParams):
    """The `per_author` newest items of each connection, kept when their type is in `item_types`;
    when more than `retrieve` remain, the newest `retrieve` are scored."""

    per_author: int = Field(default=5, gt=0)
    item_types: tuple[ItemTypeName, ...] = Field(default=("post",), min_length=1)


class NetworkSource(Source):
    """Cold-start members (no connections) get an empty set."""

    def __init__(self, name: str, params: NetworkParams, services: Services) -> None:
        super().__init__(name, params, services)
        self._per_author = params.per_author
        self._retrieve = params.retrieve
        self._types = type_codes(params.item_types)

    def retrieve(self, query: Query) -> npt.NDArray[np.int64]:
        corpus = self._corpus
        connections = corpus.connections(query.corpus_member)
        item_ids, _ = gather(corpus.author_items_indptr, corpus.author_items_indices, connections, self._per_author)
        item_ids = item_ids[np.isin(corpus.item_type[item_ids], self._types)]
        if len(item_ids) > self._retrieve:
            newest = np.argpartition(corpus.item_age_hours[item_ids], self._retrieve - 1)[: self._retrieve]
            item_ids = item_ids[newest]
        return item_ids


NETWORK = StepType("source.network", NetworkParams, NetworkSource)
