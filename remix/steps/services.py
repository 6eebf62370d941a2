"""What the built-in ranking steps are given at build time: the collaborators they call, injected once."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engines.base import Models
from features import FeatureRegistry, ModelSignature
from kvstore.base import EmbeddingStore
from remix.budget import Clock
from remix.steps.lifecycle import Resources
from remix.steps.remote import RemoteCandidates

DEFAULT_STORE = "default"


@dataclass(frozen=True)
class Services:
    """`stores`: store name -> store (views name theirs; `default` is the gateway's). `signatures`: logical
    model -> its declared signature. `wall_clock` gives epoch seconds for time-based features (age);
    `clock` is the monotonic clock budgets use. `resources` collects what steps need started and closed
    (refreshed lists, indexes, channels): the application starts them before serving. `index_root` is
    where ANN indexes live; `candidate_services` the remote candidate services by name."""

    models: Models
    stores: Mapping[str, EmbeddingStore]
    registry: FeatureRegistry
    signatures: Mapping[str, ModelSignature]
    clock: Clock = time.monotonic
    wall_clock: Callable[[], float] = time.time
    resources: Resources = field(default_factory=lambda: Resources())
    index_root: Path | None = None
    candidate_services: Mapping[str, RemoteCandidates] = field(default_factory=dict)
    memo: dict[object, object] = field(default_factory=dict)
    """What steps built from these services share, built once (e.g. one first-pass scorer per model and
    features, so the sources of a request can score in one call). Filled at build time only."""

    @property
    def store(self) -> EmbeddingStore:
        return self.stores[DEFAULT_STORE]

    def signature(self, model: str, *, step: str) -> ModelSignature:
        """The declared signature of `model`; ValueError naming the declared ones (a build-time error)."""
        from features.errors import nearest

        try:
            return self.signatures[model]
        except KeyError:
            raise ValueError(
                f"step {step!r}: model {model!r} has no declared signature (a `<model>.signature.yaml`)"
                f"{nearest(model, self.signatures)}"
            ) from None
