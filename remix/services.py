"""What built-in steps are given at build time: the collaborators they call, injected once."""

from __future__ import annotations

from dataclasses import dataclass

from engines.base import Models
from kvstore.base import EmbeddingStore
from remix.budget import Clock
from remix.corpus import Corpus


@dataclass(frozen=True)
class Services:
    models: Models
    store: EmbeddingStore
    corpus: Corpus
    clock: Clock
