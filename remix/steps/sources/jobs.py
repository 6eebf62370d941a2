"""`source.jobs`: jobs whose topic vector is closest to the member's."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import Field

from remix.candidates import ItemType
from remix.registry import StepType
from remix.services import Services
from remix.steps.keys import Query
from remix.steps.sources._base import Source, SourceParams


class JobsParams(SourceParams):
    """The `retrieve` jobs of highest dot(member_topics, item_topics) are scored; `limit` kept."""

    limit: int = Field(default=100, gt=0)
    retrieve: int = Field(default=500, gt=0)


class JobsSource(Source):
    """The job index (ids and a contiguous topic matrix) is built once, at build time, from the corpus.

    A cold-start member's topic row is zeros, so every job ties: it gets an arbitrary `retrieve` jobs,
    which the first-pass model then orders.
    """

    def __init__(self, name: str, params: JobsParams, services: Services) -> None:
        super().__init__(name, params, services)
        corpus = self._corpus
        job_ids = np.flatnonzero(np.asarray(corpus.item_type) == ItemType.JOB).astype(np.int64)
        self._job_ids: npt.NDArray[np.int64] = job_ids[job_ids > 0]
        self._job_topics = np.ascontiguousarray(corpus.item_topics[self._job_ids], dtype=np.float32)
        self._retrieve = params.retrieve

    def retrieve(self, query: Query) -> npt.NDArray[np.int64]:
        member = np.asarray(self._corpus.member_topics[query.corpus_member], dtype=np.float32)
        similarity = self._job_topics @ member
        if len(similarity) <= self._retrieve:
            return self._job_ids
        best = np.argpartition(-similarity, self._retrieve - 1)[: self._retrieve]
        return self._job_ids[best]


JOBS = StepType("source.jobs", JobsParams, JobsSource)
