"""Federation: logical model names -> weighted, sticky targets on engines, with shadow targets, a
fallback chain, per-target timeouts, circuit breakers and metrics."""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import Counter, Histogram

from engines.assignment import assignment_point
from engines.base import Engine, Models
from engines.breaker import Breaker, BreakerState, CircuitOpen, StateListener
from engines.config import BreakerConfig, RouteConfig, TargetConfig, undefined_engines
from engines.errors import BadInput, BadOutput, EngineError, EngineTimeout, ModelNotFound
from engines.route_metrics import RouteMetrics, error_outcome
from engines.route_signatures import signature_conflicts
from engines.shadow import DiffSink, DiffSpec, PrimaryAnswer, ShadowCalls
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
    """One target of one route, bound to its engine, its breaker (shared by every route naming the same
    target label) and its metric series."""

    config: TargetConfig
    engine: Engine
    ref: ModelRef
    breaker: Breaker | None
    ok: Counter  # quasar_engine_requests_total{model, target, "ok"}
    seconds: Histogram  # quasar_engine_request_seconds{model, target}
    metadata: ModelMetadata | None = None  # resolved by Router.start / swap_routes

    async def call(self, inputs: Tensors, *, timeout_s: float | None) -> dict[str, np.ndarray]:
        """One call through the breaker: `CircuitOpen` without calling when it refuses. `BadInput` is
        the caller's fault and no verdict on the target; cancellation is none either."""
        permit = None
        if self.breaker is not None:
            permit = self.breaker.acquire()
            if permit is None:
                raise CircuitOpen("circuit breaker open: not called", target=self.label, model=str(self.ref))
        try:
            outputs = await self.engine.infer(self.ref, inputs, timeout_s=timeout_s)
        except BadOutput as error:
            if not _sane(inputs):
                # NaN, inf or overflowing values in, NaN out: the caller's inputs, not the backend (no breaker verdict).
                if self.breaker is not None and permit is not None:
                    self.breaker.release(permit)
                raise BadInput(
                    f"inputs hold non-finite or overflowing values, so did the outputs: {error}",
                    target=self.label,
                    model=str(self.ref),
                ) from error
            if self.breaker is not None and permit is not None:
                self.breaker.record(permit, ok=False)
            raise
        except EngineError as error:
            if self.breaker is not None and permit is not None:
                if isinstance(error, BadInput):
                    self.breaker.release(permit)
                else:
                    self.breaker.record(permit, ok=False)
            raise
        except BaseException:
            if self.breaker is not None and permit is not None:
                self.breaker.release(permit)
            raise
        if self.breaker is not None and permit is not None:
            self.breaker.record(permit, ok=True)
        return outputs

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
    shadow: tuple[_Target, ...]
    max_shadow_in_flight: int
    shadow_top_k: int
    cumulative: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cumulative", tuple(itertools.accumulate(t.config.weight for t in self.targets)))

    def all_targets(self) -> tuple[_Target, ...]:
        return self.targets + self.fallback + self.shadow


def routing_point(route: str, routing_key: int) -> float:
    """A stable point in [0, 1) for (route, key): `engines.assignment.assignment_point` salted with the route
    name, which keeps A/B assignments of different models independent."""
    return assignment_point(route, routing_key)


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
    targets in order (skipping one equal to the primary), each with
    `min(target.timeout_s, remaining of timeout_s)`, until one answers. Any `EngineError` moves on to
    the next target except `BadInput` (the caller's inputs; every target of a route takes the same
    ones), which is raised at once; cancellation never does. A target whose circuit breaker is open is
    skipped without being called (`CircuitOpen`). When every target failed, or no time is left for the
    next, the last error's type is raised with every attempt in its message.

    Each of the route's shadow targets is called too, in the background (`ShadowCalls`): with
    `min(its timeout_s, timeout_s)`, through its breaker, at most `max_shadow_in_flight` at once per
    route. The caller never waits for it: its answer is compared, in its background task, with the
    answer the caller got (`engines.shadow_diff`; heads named by `describe_outputs`, K of the top-K
    overlap the route's `shadow_top_k`), into the shadow histograms of `metrics` and `on_diff`.

    Breakers are keyed by target label and survive route swaps while their config stays the same.
    `clock` (seconds, monotonic) drives breakers and call timings; `metrics` defaults to a private
    registry. Routes are replaced atomically (`swap_routes`); a call in progress finishes on the routes
    it began with. The router owns the engines' lifecycle (`start`, `close`).
    """

    def __init__(
        self,
        routes: Mapping[str, RouteConfig],
        engines: Mapping[str, Engine],
        *,
        metrics: RouteMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_diff: DiffSink | None = None,
    ) -> None:
        self._engines = dict(engines)
        self._metrics = metrics if metrics is not None else RouteMetrics()
        self._clock = clock
        self._shadow = ShadowCalls(self._metrics, on_diff=on_diff)
        self._heads: dict[str, dict[str, tuple[str, ...]]] = {}  # logical model -> output -> head names
        self._breakers: dict[str, Breaker] = {}
        self._published: set[str] = set()  # target labels with a breaker gauge series
        self._routes, self._breakers = self._build(routes)
        self._route_configs = dict(routes)
        self._publish_breakers()
        self._started = False

    @property
    def engine_names(self) -> frozenset[str]:
        """Names of the engines routes may name."""
        return frozenset(self._engines)

    def breaker_state(self, target_label: str) -> BreakerState | None:
        """State of the breaker of a target label in force (None: no such target, or no breaker)."""
        breaker = self._breakers.get(target_label)
        return None if breaker is None else breaker.state

    async def join_shadow(self) -> None:
        """Wait for the shadow calls running now to finish (their comparisons included)."""
        await self._shadow.join()

    def describe_outputs(self, model: str, outputs: Mapping[str, Sequence[str]]) -> None:
        """Name the heads of logical model `model`'s outputs for its shadow diffs: output name -> one head
        name per column (the model signature's `outputs`). Then exactly these outputs are compared, and an
        output given no heads is not compared at all; undescribed models are compared output by output
        with columns labelled `<output>` or `<output>[<i>]`. Replaces an earlier description; survives
        route swaps. Raises ValueError for an empty head name or one given twice."""
        names = [head for heads in outputs.values() for head in heads]
        if any(not name for name in names):
            raise ValueError(f"{model}: empty head name in {dict(outputs)}")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{model}: head names given more than once: {repeated}")
        self._heads[model] = {output: tuple(heads) for output, heads in outputs.items()}

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
        """Cancel shadow calls, close every engine even when one fails to; then raise the first failure."""
        self._started = False
        await self._shadow.close()
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

    def versions(self, model: str) -> list[str]:
        """Distinct versions a call to `model` may be answered by (targets and fallbacks), sorted."""
        route = self._route(model)
        return sorted({target.version for target in (*route.targets, *route.fallback)})

    async def check_routes(self, routes: Mapping[str, RouteConfig]) -> None:
        """Raise what `swap_routes(routes)` would raise, without swapping (a dry run)."""
        table, _breakers = self._build(routes)
        if self._started:
            await self._resolve(table)

    async def swap_routes(self, routes: Mapping[str, RouteConfig]) -> None:
        """Replace every route at once. New targets are resolved first (once started), so a bad route
        raises here and the old routes stay in force. Raises ValueError for an unknown engine or for
        routes giving one target label two breaker configs or whose targets take different tensors;
        `EngineError` for a target that cannot be resolved (its engine does not serve the model, or is
        down)."""
        new_routes, new_breakers = self._build(routes)
        if self._started:
            await self._resolve(new_routes)
        # One assignment each: a call reads self._routes once, so it sees the old or the new table.
        self._routes = new_routes
        self._breakers = new_breakers
        self._route_configs = dict(routes)
        self._publish_breakers()

    async def infer(self, model: str, inputs: Tensors, *, timeout_s: float | None, routing_key: int) -> RoutedCall:
        route = self._route(model)
        if not route.shadow:
            return await self._answer(route, model, inputs, timeout_s=timeout_s, routing_key=routing_key)
        answer: asyncio.Future[PrimaryAnswer | None] = asyncio.get_running_loop().create_future()
        diff = DiffSpec(answer, self._heads.get(model), route.shadow_top_k)
        started = [
            self._shadow.submit(
                model,
                shadow.label,
                route.max_shadow_in_flight,
                functools.partial(shadow.call, inputs, timeout_s=_min_timeout(shadow.config.timeout_s, timeout_s)),
                diff=diff,
            )
            for shadow in route.shadow
        ]
        routed: RoutedCall | None = None
        try:
            routed = await self._answer(route, model, inputs, timeout_s=timeout_s, routing_key=routing_key)
            return routed
        finally:
            # Resolved on every way out (failure and cancellation too), so no shadow task waits forever.
            if routed is None or not any(started):
                answer.set_result(None)
            else:
                answer.set_result(PrimaryAnswer.snapshot(routed.target, routed.outputs))

    async def _answer(
        self, route: _Route, model: str, inputs: Tensors, *, timeout_s: float | None, routing_key: int
    ) -> RoutedCall:
        """The chain of the class docstring: the primary, then the fallbacks."""
        primary = _choose(route, routing_key)
        chain = [primary, *(target for target in route.fallback if target.label != primary.label)]
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        failures: list[tuple[_Target, EngineError]] = []
        for position, target in enumerate(chain):
            if position:
                self._metrics.fallbacks.labels(model, chain[position - 1].label).inc()
            remaining_s = None if deadline is None else deadline - loop.time()
            if remaining_s is not None and remaining_s <= 0:
                raise self._exhausted(model, failures, chain[position:], timeout_s)
            started = self._clock()
            try:
                outputs = await target.call(inputs, timeout_s=_min_timeout(target.config.timeout_s, remaining_s))
            except CircuitOpen as error:
                self._metrics.requests.labels(model, target.label, "breaker_open").inc()
                failures.append((target, error))
                continue
            except EngineError as error:
                target.seconds.observe(self._clock() - started)
                self._metrics.requests.labels(model, target.label, error_outcome(error)).inc()
                if isinstance(error, BadInput):
                    raise
                failures.append((target, error))
                continue
            except asyncio.CancelledError:
                self._metrics.requests.labels(model, target.label, "cancelled").inc()
                raise
            target.seconds.observe(self._clock() - started)
            target.ok.inc()
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

    def _build(self, routes: Mapping[str, RouteConfig]) -> tuple[dict[str, _Route], dict[str, Breaker]]:
        """The route table and the breakers it uses, reusing a breaker in force whose config is unchanged.
        Pure: nothing is in force until the caller assigns both."""
        problems = undefined_engines(routes, self._engines)
        if problems:
            raise ValueError("; ".join(problems))
        configs: dict[str, BreakerConfig | None] = {}
        for name, route in routes.items():
            for config in (*route.targets, *route.fallback, *route.shadow):
                if configs.setdefault(config.label, config.breaker) != config.breaker:
                    raise ValueError(
                        f"route {name!r} gives target {config.label} a breaker config other routes do not: "
                        "routes naming the same target share its breaker and must agree on it"
                    )
        breakers: dict[str, Breaker] = {}
        for label, breaker_config in configs.items():
            if breaker_config is None:
                continue
            current = self._breakers.get(label)
            if current is not None and current.config == breaker_config:
                breakers[label] = current
            else:
                breakers[label] = Breaker(breaker_config, self._clock, on_change=self._breaker_listener(label))
        table = {
            name: _Route(
                name=name,
                targets=tuple(self._target(name, t, breakers) for t in route.targets),
                fallback=tuple(self._target(name, t, breakers) for t in route.fallback),
                shadow=tuple(self._target(name, t, breakers) for t in route.shadow),
                max_shadow_in_flight=route.max_shadow_in_flight,
                shadow_top_k=route.shadow_top_k,
            )
            for name, route in routes.items()
        }
        return table, breakers

    def _target(self, route: str, config: TargetConfig, breakers: Mapping[str, Breaker]) -> _Target:
        return _Target(
            config=config,
            engine=self._engines[config.engine],
            ref=ModelRef(config.model, config.version),
            breaker=breakers.get(config.label),
            ok=self._metrics.requests.labels(route, config.label, "ok"),
            seconds=self._metrics.request_seconds.labels(route, config.label),
        )

    def _breaker_listener(self, label: str) -> StateListener:
        def publish(breaker: Breaker, state: BreakerState) -> None:
            # A replaced breaker may still hear from calls it let through: only the one in force reports.
            if self._breakers.get(label) is breaker:
                self._metrics.breaker_state.labels(label).set(state)

        return publish

    def _publish_breakers(self) -> None:
        """Point the breaker gauge at the breakers in force; drop series of targets no longer routed."""
        gauge = self._metrics.breaker_state
        for label in self._published - self._breakers.keys():
            gauge.remove(label)
        for label, breaker in self._breakers.items():
            gauge.labels(label).set(breaker.state)
        self._published = set(self._breakers)

    async def _resolve(self, routes: Mapping[str, _Route]) -> None:
        """Resolve every target's metadata (`EngineError` naming the route and target when one cannot
        be), then check that each route's targets take the same inputs and give the same outputs
        (`ValueError` listing the differences), so a swap or a fallback never changes what callers get."""
        for route in routes.values():
            for target in route.all_targets():
                try:
                    target.metadata = await target.engine.metadata(target.ref)
                except EngineError as error:
                    raise type(error)(
                        f"route {route.name!r} target {target.label}: {error}", target=error.target, model=route.name
                    ) from error
        for route in routes.values():
            first, *rest = route.all_targets()
            assert first.metadata is not None  # resolved above
            problems = signature_conflicts(
                (first.label, first.metadata),
                [(t.label, t.metadata, t not in route.shadow) for t in rest if t.metadata is not None],
            )
            if problems:
                raise ValueError(
                    f"route {route.name!r}: its targets do not take the same tensors: {'; '.join(problems)}"
                )

    @staticmethod
    def _exhausted(
        model: str, failures: list[tuple[_Target, EngineError]], untried: list[_Target], timeout_s: float | None
    ) -> EngineError:
        attempts = ", ".join(f"{t.label} ({e.reason}: {e})" for t, e in failures) or "none"
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


_OVERFLOWING = 1e18
"""A float input beyond this magnitude overflows float32 arithmetic in any layer that multiplies it."""


def _sane(inputs: Tensors) -> bool:
    """Whether every floating-point input is finite and small enough not to overflow float32 arithmetic
    (checked only after an output was not finite: then the inputs, not the backend, are to blame)."""
    floats = (np.asarray(t) for t in inputs.values())
    return all(np.isfinite(t).all() and (np.abs(t) < _OVERFLOWING).all() for t in floats if t.dtype.kind == "f")


def _min_timeout(own_s: float | None, remaining_s: float | None) -> float | None:
    if own_s is None:
        return remaining_s
    if remaining_s is None:
        return own_s
    return min(own_s, remaining_s)


def _fallback_reason(model: str, failures: list[tuple[_Target, EngineError]]) -> str | None:
    if not failures:
        return None
    return f"{model}: fell back from " + ", ".join(f"{t.label} ({e.reason})" for t, e in failures)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a caller
    _conforms: type[Models] = Router
