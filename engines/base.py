"""The Engine protocol every model backend implements, and the Models protocol steps call."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from engines.types import ModelMetadata, ModelRef, Tensors


@runtime_checkable
class Engine(Protocol):
    """One backend (an in-process runtime or a connection to a model server).

    `start()` does I/O (load models, open channels, check metadata) and must finish before the gateway
    reports ready; constructors do none. `infer` raises only `engines.errors.EngineError` subclasses and
    never blocks the event loop. `timeout_s=None` means no limit of the call's own.
    """

    name: str

    async def start(self) -> None: ...

    async def infer(
        self, model: ModelRef, inputs: Tensors, *, timeout_s: float | None = None
    ) -> dict[str, np.ndarray]: ...

    async def ready(self) -> bool: ...

    async def metadata(self, model: ModelRef) -> ModelMetadata: ...

    async def close(self) -> None: ...


class ModelCall(Protocol):
    """The answer of `Models.infer`: outputs plus where they came from."""

    outputs: dict[str, np.ndarray]
    target: str
    version: str
    degraded_reason: str | None


@runtime_checkable
class Models(Protocol):
    """Calls a *logical* model (e.g. 'feed_ranker') wherever routing sends it.

    `routing_key` (the member id) keeps A/B assignment sticky. Raises `EngineError` when no target
    could answer.
    """

    async def infer(self, model: str, inputs: Tensors, *, timeout_s: float | None, routing_key: int) -> ModelCall: ...


@runtime_checkable
class LoadsModels(Protocol):
    """An in-process engine that loads a model file while serving (a release brings its artifacts as
    files). Raises `EngineUnavailable` when the file cannot be loaded; the models it served stay."""

    async def load_model(self, name: str, path: Path) -> None: ...
