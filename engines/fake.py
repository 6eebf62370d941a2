"""Fakes of `Engine` and `Models` for tests: scripted answers, injected failures, calls that block on an
`asyncio.Event` (so timeout tests wait on events, never on sleeps)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engines._signature import check_inputs, check_outputs
from engines.base import Engine, Models
from engines.errors import EngineError, EngineTimeout, EngineUnavailable, ModelNotFound
from engines.router import RoutedCall
from engines.types import ModelMetadata, ModelRef, Tensors

Handler = Callable[[ModelRef, Tensors], Awaitable[Mapping[str, np.ndarray]]]
"""`async (model, inputs) -> outputs` of a `FakeEngine`."""

ModelFn = Callable[[Tensors], Mapping[str, np.ndarray] | Awaitable[Mapping[str, np.ndarray]]]
"""`(inputs) -> outputs`, sync or async, of one logical model of `FakeModels`."""


@dataclass(frozen=True)
class FakeCall:
    """One recorded call. `routing_key` is None for `FakeEngine` calls."""

    model: str
    inputs: dict[str, np.ndarray]
    timeout_s: float | None
    routing_key: int | None = None


class _Script:
    """Failure and blocking hooks shared by the fakes, keyed by model name (None: every model)."""

    def __init__(self) -> None:
        self._errors: dict[str | None, EngineError] = {}
        self._gates: dict[str | None, asyncio.Event] = {}
        self.entered = asyncio.Event()

    def fail_with(self, error: EngineError | None, model: str | None = None) -> None:
        if error is None:
            self._errors.pop(model, None)
        else:
            self._errors[model] = error

    def block_until(self, event: asyncio.Event | None, model: str | None = None) -> None:
        if event is None:
            self._gates.pop(model, None)
        else:
            self._gates[model] = event

    async def play(self, model: str) -> None:
        """Raise the scripted error, or wait for the gate; `entered` is set first either way."""
        self.entered.set()
        error = self._errors.get(model) or self._errors.get(None)
        if error is not None:
            raise error
        gate = self._gates.get(model) or self._gates.get(None)
        if gate is not None:
            await gate.wait()


class FakeEngine:
    """An `Engine` answering from `handler`, or from scripted outputs (model name -> outputs).

    With `metadata`, it serves exactly those models and checks inputs and outputs like a real engine
    (`BadInput`, `BadOutput`); without, it serves the scripted models, or any name for a handler, with
    an empty signature. Honours the `Engine` contract otherwise: `EngineUnavailable` outside
    start..close, `ModelNotFound`, `EngineTimeout` when blocked past `timeout_s`.
    Test hooks: `fail_with(error, model=None)`, `block_until(event, model=None)`, `calls`, `entered`.
    """

    def __init__(
        self,
        name: str,
        handler: Handler | Mapping[str, Mapping[str, np.ndarray]],
        *,
        metadata: Mapping[str, ModelMetadata] | None = None,
        version: str = "1",
    ) -> None:
        self.name = name
        self._handler = handler
        self._metadata = dict(metadata) if metadata is not None else None
        self._version = version
        self._script = _Script()
        self.calls: list[FakeCall] = []
        self.started = False
        self.closed = False

    @property
    def entered(self) -> asyncio.Event:
        """Set once a call got past its checks (before failing or blocking): wait on it, not on sleeps."""
        return self._script.entered

    def fail_with(self, error: EngineError | None, model: str | None = None) -> None:
        """Make calls (to `model`, or all) raise `error`; None clears."""
        self._script.fail_with(error, model)

    def block_until(self, event: asyncio.Event | None, model: str | None = None) -> None:
        """Make calls (to `model`, or all) wait for `event` before answering; None clears."""
        self._script.block_until(event, model)

    async def start(self) -> None:
        self.started = True

    async def ready(self) -> bool:
        return self.started and not self.closed

    async def close(self) -> None:
        self.closed = True

    async def metadata(self, model: ModelRef) -> ModelMetadata:
        self._check_state(model)
        if self._metadata is not None:
            if model.name not in self._metadata:
                raise self._not_found(model, sorted(self._metadata))
            meta = self._metadata[model.name]
        else:
            if isinstance(self._handler, Mapping) and model.name not in self._handler:
                raise self._not_found(model, sorted(self._handler))
            meta = ModelMetadata(name=model.name, version=self._version, inputs=(), outputs=())
        if model.version is not None and model.version != meta.version:
            raise ModelNotFound(
                f"model {model.name!r} has no version {model.version!r}; serving {meta.version!r}",
                target=self.name,
                model=str(model),
            )
        return meta

    async def infer(self, model: ModelRef, inputs: Tensors, *, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        meta = await self.metadata(model)
        where = {"target": self.name, "model": str(model)}
        if self._metadata is not None:
            check_inputs(meta, inputs, **where)
        self.calls.append(FakeCall(model=model.name, inputs=dict(inputs), timeout_s=timeout_s))
        try:
            async with asyncio.timeout(timeout_s) as scope:
                await self._script.play(model.name)
                if isinstance(self._handler, Mapping):
                    outputs = {key: value.copy() for key, value in self._handler[model.name].items()}
                else:
                    outputs = dict(await self._handler(model, inputs))
        except TimeoutError:
            if scope.expired():
                raise EngineTimeout(f"no answer within {timeout_s}s", **where) from None
            raise
        if self._metadata is not None:
            return check_outputs(meta, outputs, **where)
        return outputs

    def _check_state(self, model: ModelRef) -> None:
        if not self.started or self.closed:
            state = "closed" if self.closed else "not started"
            raise EngineUnavailable(f"engine is {state}", target=self.name, model=str(model))

    def _not_found(self, model: ModelRef, known: list[str]) -> ModelNotFound:
        return ModelNotFound(f"no model {model.name!r}; serving {known}", target=self.name, model=str(model))


class FakeModels:
    """A `Models` for step tests: logical model name -> function of the inputs.

    Answers with target 'fake/<model>' and `version`. Unknown model -> `ModelNotFound`; blocked past
    `timeout_s` -> `EngineTimeout`; exceptions of the functions propagate unchanged.
    Test hooks: `fail_with(error, model=None)`, `block_until(event, model=None)`,
    `degrade(reason, model=None)` (answers carry that `degraded_reason`), `calls`, `entered`.
    """

    def __init__(self, models: Mapping[str, ModelFn], *, version: str = "fake") -> None:
        self._models = dict(models)
        self._version = version
        self._script = _Script()
        self._degraded: dict[str | None, str] = {}
        self.calls: list[FakeCall] = []

    @property
    def entered(self) -> asyncio.Event:
        return self._script.entered

    def fail_with(self, error: EngineError | None, model: str | None = None) -> None:
        self._script.fail_with(error, model)

    def block_until(self, event: asyncio.Event | None, model: str | None = None) -> None:
        self._script.block_until(event, model)

    def degrade(self, reason: str | None, model: str | None = None) -> None:
        if reason is None:
            self._degraded.pop(model, None)
        else:
            self._degraded[model] = reason

    async def infer(self, model: str, inputs: Tensors, *, timeout_s: float | None, routing_key: int) -> RoutedCall:
        fn = self._models.get(model)
        if fn is None:
            raise ModelNotFound(f"no route for logical model {model!r}; routes: {sorted(self._models)}", model=model)
        self.calls.append(FakeCall(model=model, inputs=dict(inputs), timeout_s=timeout_s, routing_key=routing_key))
        try:
            async with asyncio.timeout(timeout_s) as scope:
                await self._script.play(model)
                result = fn(inputs)
                outputs = dict(await result if inspect.isawaitable(result) else result)
        except TimeoutError:
            if scope.expired():
                raise EngineTimeout(f"no answer within {timeout_s}s", target=f"fake/{model}", model=model) from None
            raise
        return RoutedCall(
            outputs=outputs,
            target=f"fake/{model}",
            version=self._version,
            degraded_reason=self._degraded.get(model) or self._degraded.get(None),
        )


if TYPE_CHECKING:  # mypy proves the protocols are met, so drift fails CI rather than a caller
    _engine: type[Engine] = FakeEngine
    _models: type[Models] = FakeModels
