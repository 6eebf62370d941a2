"""The remote candidate service as the `source.grpc` step sees it: a structural protocol, so remix never
imports grpc (the gateway injects `engines.candidate_client.GrpcCandidateClient`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import numpy.typing as npt


class RemoteCandidates(Protocol):
    name: str

    async def start(self) -> None: ...

    async def retrieve(
        self,
        member_id: int,
        *,
        limit: int,
        context: Mapping[str, str],
        source: str,
        request_id: str,
        timeout_s: float | None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32] | None]:
        """Unique item ids, best first, at most `limit` (and their scores when the service gives them).
        Raises `engines.errors.EngineError` subclasses."""
        ...

    async def close(self) -> None: ...
