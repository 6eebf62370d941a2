"""Federation: logical model names -> weighted, sticky targets on engines, with a fallback chain."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engines.base import Engine, Models
from engines.config import RouteConfig, TargetConfig, undefined_engines
from engines.errors import EngineError, EngineTimeout, ModelNotFound
from engines.types import ModelMetadata, ModelRef, Tensors


@dataclass  # not frozen: `ModelCall` declares plain (settable) attributes, which a frozen dataclass fails
class RoutedCall:
    """Satisfies `engines.base.ModelCall`. `target` is 'engine/model[/version]' of the target that
    answered; `degraded_reason` is set when that was a fallback."""

    outputs: dict[str, np.ndarray]
    target: str
    version: str
    degraded_reason: str | None = None


@dataclass(eq=False)
class _Target:
    """One target of a route, bound to its engine. Per-target state (circuit breaker, stats) goes here."""

    config: TargetConfig
    engine: Engine
    ref: ModelRef
    metadata: ModelMetadata | None = None  # resolved by Router.start / swap_routes

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def version(self) -> str:
        if self.metadata is not None:
            return self.metadata.version
        return self.config.version or "unknown"


@dataclass(frozen=True)
class _Route:
    name: str
    targets: tuple[_Target, ...]
    fallback: tuple[_Target, ...]
    cumulative: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cumulative", tuple(itertools.accumulate(t.config.weight for t in self.targets)))

    def all_targets(self) -> tuple[_Target, ...]:
        return self.targets + self.fallback


def routing_point(route: str, routing_key: int) -> float:
    """A stable point in [0, 1) for (route, key): same on every process and restart (unlike `hash()`).

    Salting with the route name keeps A/B assignments of different models independent.
    """
    digest = hashlib.blake2b(f"{route}\x00{routing_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _choose(route: _Route, routing_key: int) -> _Target:
    """The primary target for this key: weighted, sticky. Zero-weight targets are never chosen."""
    if len(route.targets) == 1:
        return route.targets[0]
    point = routing_point(route.name, routing_key) * route.cumulative[-1]
    index = bisect.bisect_right(route.cumulative, point)
    return route.targets[min(index, len(route.targets) - 1)]


class Router:
    """Implements `engines.base.Models` over named engines.

    A call goes to the primary target `_choose` picks for its routing key, then to the route's fallback
    targets in order (skipping one that already failed), each with
    `min(target.timeout_s, remaining of timeout_s)`, until one answers. Any `EngineError` moves on to
    the next target; cancellation does not. When every target failed, or no time is left for the next,
    the last error's type is raised with every attempt in its message.

    Routes are replaced atomically (`swap_routes`); a call in progress finishes on the routes it began
    with. The router owns the engines' lifecycle (`start`, `close`).
    """

    def __init__(self, routes: Mapping[str, RouteConfig], engines: Mapping[str, Engine]) -> None:
        self._engines = dict(engines)
        self._routes = self._build(routes)
        self._route_configs = dict(routes)
        self._started = False

    @property
    def routes(self) -> dict[str, RouteConfig]:
        """The route configuration in force."""
        return dict(self._route_configs)

    async def start(self) -> None:
        """Start every engine, then resolve every target's metadata (version, signature).

        Strict: a target naming a model its engine does not serve fails startup, not the first request.
        """
        for engine in self._engines.values():
            await engine.start()
        await self._resolve(self._routes)
        self._started = True

    async def ready(self) -> bool:
        if not self._started:
            return False
        for engine in self._engines.values():
            if not await engine.ready():
                return False
        return True

    async def close(self) -> None:
        """Close every engine, even when one fails to; then raise the first failure."""
        self._started = False
        results = await asyncio.gather(*(engine.close() for engine in self._engines.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def metadata(self, model: str) -> ModelMetadata:
        """Signature of the route's first target (all targets of a route must accept the same inputs)."""
        target = self._route(model).targets[0]
        if target.metadata is not None:
            return target.metadata
        return await target.engine.metadata(target.ref)

    async def swap_routes(self, routes: Mapping[str, RouteConfig]) -> None:
        """Replace every route at once. New targets are resolved first (once started), so a bad route
        raises here and the old routes stay in force. Raises ValueError for an unknown engine."""
        new_routes = self._build(routes)
        if self._started:
            await self._resolve(new_routes)
        # One assignment each: a call reads self._routes once, so it sees the old or the new table.
        self._routes = new_routes
        self._route_configs = dict(routes)

    async def infer(self, model: str, inputs: Tensors, *, timeout_s: float | None, routing_key: int) -> RoutedCall:
        route = self._route(model)
        primary = _choose(route, routing_key)
        chain = [primary, *(target for target in route.fallback if target.label != primary.label)]
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        failures: list[tuple[_Target, EngineError]] = []
        for position, target in enumerate(chain):
            remaining_s = None if deadline is None else deadline - loop.time()
            if remaining_s is not None and remaining_s <= 0:
                raise self._exhausted(model, failures, chain[position:], timeout_s)
            try:
                outputs = await target.engine.infer(
                    target.ref, inputs, timeout_s=_min_timeout(target.config.timeout_s, remaining_s)
                )
            except EngineError as error:
                failures.append((target, error))
                continue
            return RoutedCall(
                outputs=outputs,
                target=target.label,
                version=target.version,
                degraded_reason=_fallback_reason(model, failures),
            )
        raise self._exhausted(model, failures, [], timeout_s)

    def _route(self, model: str) -> _Route:
        route = self._routes.get(model)
        if route is None:
            raise ModelNotFound(f"no route for logical model {model!r}; routes: {sorted(self._routes)}", model=model)
        return route

    def _build(self, routes: Mapping[str, RouteConfig]) -> dict[str, _Route]:
        problems = undefined_engines(routes, self._engines)
        if problems:
            raise ValueError("; ".join(problems))
        return {
            name: _Route(
                name=name,
                targets=tuple(self._target(t) for t in route.targets),
                fallback=tuple(self._target(t) for t in route.fallback),
            )
            for name, route in routes.items()
        }

    def _target(self, config: TargetConfig) -> _Target:
        return _Target(config=config, engine=self._engines[config.engine], ref=ModelRef(config.model, config.version))

    async def _resolve(self, routes: Mapping[str, _Route]) -> None:
        for route in routes.values():
            for target in route.all_targets():
                try:
                    target.metadata = await target.engine.metadata(target.ref)
                except EngineError as error:
                    raise type(error)(
                        f"route {route.name!r} target {target.label}: {error}", target=error.target, model=route.name
                    ) from error

    @staticmethod
    def _exhausted(
        model: str, failures: list[tuple[_Target, EngineError]], untried: list[_Target], timeout_s: float | None
    ) -> EngineError:
        attempts = ", ".join(f"{t.label} ({type(e).__name__}: {e})" for t, e in failures) or "none"
        message = f"{model}: no target answered; tried {attempts}"
        if untried:
            message += f"; no time left within {timeout_s}s for {', '.join(t.label for t in untried)}"
        if not failures:
            return EngineTimeout(message, model=model)
        last = failures[-1][1]
        # Every EngineError subclass shares the base constructor, so the last error's type survives.
        error = type(last)(message, target=last.target, model=model)
        error.__cause__ = last
        return error


def _min_timeout(own_s: float | None, remaining_s: float | None) -> float | None:
    if own_s is None:
        return remaining_s
    if remaining_s is None:
        return own_s
    return min(own_s, remaining_s)


def _fallback_reason(model: str, failures: list[tuple[_Target, EngineError]]) -> str | None:
    if not failures:
        return None
    return f"{model}: fell back from " + ", ".join(f"{t.label} ({type(e).__name__})" for t, e in failures)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a caller
    _conforms: type[Models] = Router
