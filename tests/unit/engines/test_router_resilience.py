"""Router features for production: circuit breakers per target, per-target metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from engines.breaker import BreakerState, CircuitOpen
from engines.config import RouteConfig
from engines.errors import BadInput, BadOutput, EngineTimeout, EngineUnavailable
from engines.fake import FakeEngine
from engines.route_metrics import RouteMetrics
from engines.router import Router
from engines.types import ModelRef, Tensors
from tests.unit.engines.test_breaker import Clock

INPUTS = {"features": np.ones((2, 3), dtype=np.float32)}
DOWN = EngineUnavailable("connection refused")
BREAKER = {"consecutive_failures": 2, "open_s": 10.0}


def fake(name: str) -> FakeEngine:
    async def answer(model: ModelRef, inputs: Tensors) -> dict[str, np.ndarray]:
        return {"scores": np.full(len(inputs["features"]), len(name), dtype=np.float32)}

    return FakeEngine(name, answer, version=f"{name}-v1")


def target(engine: str, **fields: Any) -> dict[str, Any]:
    return {"engine": engine, "model": "m", "breaker": BREAKER, **fields}


def route(*targets: dict[str, Any], fallback: list[dict[str, Any]] | None = None) -> RouteConfig:
    return RouteConfig.model_validate({"targets": list(targets), "fallback": fallback or []})


class Setup:
    def __init__(self, routes: dict[str, RouteConfig], *engines: FakeEngine) -> None:
        self.clock = Clock()
        self.registry = CollectorRegistry()
        self.engines = {engine.name: engine for engine in engines}
        self.router = Router(routes, self.engines, metrics=RouteMetrics(self.registry), clock=self.clock)

    async def __aenter__(self) -> Setup:
        await self.router.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.router.close()

    async def target_of(self, model: str = "r", key: int = 1) -> str:
        return (await self.router.infer(model, INPUTS, timeout_s=1.0, routing_key=key)).target

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


async def test_an_open_breaker_skips_to_the_fallback_without_calling() -> None:
    a, b = fake("a"), fake("bb")
    async with Setup({"r": route(target("a"), fallback=[target("bb")])}, a, b) as s:
        a.fail_with(DOWN)
        assert [await s.target_of() for _ in range(2)] == ["bb/m", "bb/m"]
        assert s.router.breaker_state("a/m") is BreakerState.OPEN
        calls_before = len(a.calls)
        call = await s.router.infer("r", INPUTS, timeout_s=1.0, routing_key=1)
        assert len(a.calls) == calls_before, "an open breaker must not let the call reach the engine"
        assert call.target == "bb/m"
        assert call.degraded_reason == "r: fell back from a/m (circuit open)"
        assert s.sample("quasar_engine_requests_total", model="r", target="a/m", outcome="breaker_open") == 1
        assert s.sample("quasar_engine_requests_total", model="r", target="a/m", outcome="unavailable") == 2
        assert s.sample("quasar_engine_fallbacks_total", model="r", from_target="a/m") == 3
        assert s.sample("quasar_engine_breaker_state", target="a/m") == BreakerState.OPEN


async def test_half_open_probe_success_closes_and_failure_reopens() -> None:
    a, b = fake("a"), fake("bb")
    async with Setup({"r": route(target("a"), fallback=[target("bb")])}, a, b) as s:
        a.fail_with(DOWN)
        for _ in range(2):
            await s.target_of()
        s.clock.advance(10.0)
        assert await s.target_of() == "bb/m", "the probe failed: back to the fallback"
        assert s.router.breaker_state("a/m") is BreakerState.OPEN
        s.clock.advance(10.0)
        a.fail_with(None)
        assert s.sample("quasar_engine_breaker_state", target="a/m") == BreakerState.OPEN
        assert await s.target_of() == "a/m"
        assert s.router.breaker_state("a/m") is BreakerState.CLOSED
        assert s.sample("quasar_engine_breaker_state", target="a/m") == BreakerState.CLOSED


async def test_while_a_probe_runs_other_calls_go_to_the_fallback() -> None:
    a, b = fake("a"), fake("bb")
    async with Setup({"r": route(target("a"), fallback=[target("bb")])}, a, b) as s:
        a.fail_with(DOWN)
        for _ in range(2):
            await s.target_of()
        s.clock.advance(10.0)
        a.fail_with(None)
        gate = asyncio.Event()
        a.block_until(gate)
        a.entered.clear()
        probe = asyncio.create_task(s.target_of())
        await a.entered.wait()
        assert await s.target_of() == "bb/m"
        gate.set()
        assert await probe == "a/m"
        assert s.router.breaker_state("a/m") is BreakerState.CLOSED


async def test_a_cancelled_probe_gives_its_slot_back() -> None:
    a = fake("a")
    async with Setup({"r": route(target("a"))}, a) as s:
        a.fail_with(DOWN)
        for _ in range(2):
            with pytest.raises(EngineUnavailable):
                await s.target_of()
        s.clock.advance(10.0)
        a.fail_with(None)
        a.block_until(asyncio.Event())
        a.entered.clear()
        probe = asyncio.create_task(s.target_of())
        await a.entered.wait()
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert s.sample("quasar_engine_requests_total", model="r", target="a/m", outcome="cancelled") == 1
        a.block_until(None)
        assert await s.target_of() == "a/m", "the cancelled probe must not hold the only probe slot"


async def test_with_no_fallback_an_open_breaker_fails_fast_as_unavailable() -> None:
    a = fake("a")
    async with Setup({"r": route(target("a"))}, a) as s:
        a.fail_with(EngineTimeout("slow"))
        for _ in range(2):
            with pytest.raises(EngineTimeout):
                await s.target_of()
        with pytest.raises(CircuitOpen, match=r"tried a/m \(circuit open: \[a/m/m\] circuit breaker open") as raised:
            await s.target_of()
        assert isinstance(raised.value, EngineUnavailable)
        assert len(a.calls) == 2


async def test_failure_rate_threshold_opens_the_breaker() -> None:
    a, b = fake("a"), fake("bb")
    rate = {"consecutive_failures": 100, "failure_rate": 0.5, "window": 4, "min_calls": 4, "open_s": 1.0}
    async with Setup({"r": route(target("a", breaker=rate), fallback=[target("bb")])}, a, b) as s:
        for fail in (False, True, False, True):  # the 4th call fails: 2 of 4
            a.fail_with(DOWN if fail else None)
            await s.target_of()
        assert s.router.breaker_state("a/m") is BreakerState.OPEN


async def test_bad_input_neither_falls_back_nor_counts_against_the_target() -> None:
    a, b = fake("a"), fake("bb")
    async with Setup({"r": route(target("a"), fallback=[target("bb")])}, a, b) as s:
        a.fail_with(BadInput("features has rank 3"))
        for _ in range(3):
            with pytest.raises(BadInput):
                await s.target_of()
        assert b.calls == []
        assert s.router.breaker_state("a/m") is BreakerState.CLOSED
        assert s.sample("quasar_engine_requests_total", model="r", target="a/m", outcome="bad_input") == 3
        assert s.sample("quasar_engine_fallbacks_total", model="r", from_target="a/m") == 0


async def test_no_breaker_when_configured_off() -> None:
    a, b = fake("a"), fake("bb")
    async with Setup({"r": route(target("a", breaker=None), fallback=[target("bb")])}, a, b) as s:
        a.fail_with(DOWN)
        for _ in range(10):
            await s.target_of()
        assert len(a.calls) == 10
        assert s.router.breaker_state("a/m") is None


async def test_metrics_count_and_time_every_call_per_model_and_target() -> None:
    a = fake("a")
    async with Setup({"r": route(target("a")), "q": route(target("a"))}, a) as s:
        for model in ("r", "r", "q"):
            await s.target_of(model)
        assert s.sample("quasar_engine_requests_total", model="r", target="a/m", outcome="ok") == 2
        assert s.sample("quasar_engine_requests_total", model="q", target="a/m", outcome="ok") == 1
        assert s.sample("quasar_engine_request_seconds_count", model="r", target="a/m") == 2
        # The fake clock never moves during a call: every call lands in the smallest bucket.
        assert s.sample("quasar_engine_request_seconds_bucket", model="r", target="a/m", le="0.0005") == 2


async def test_routes_naming_one_target_share_its_breaker() -> None:
    a, b = fake("a"), fake("bb")
    async with Setup({"r": route(target("a"), fallback=[target("bb")]), "q": route(target("a"))}, a, b) as s:
        a.fail_with(DOWN)
        for _ in range(2):
            await s.target_of("r")
        with pytest.raises(CircuitOpen):
            await s.target_of("q")


async def test_a_swap_keeps_a_breaker_whose_config_is_unchanged_and_resets_a_changed_one() -> None:
    a, b = fake("a"), fake("bb")
    async with Setup({"r": route(target("a"), fallback=[target("bb")])}, a, b) as s:
        a.fail_with(DOWN)
        for _ in range(2):
            await s.target_of()
        await s.router.swap_routes({"r": route(target("a", weight=2.0), fallback=[target("bb")])})
        assert s.router.breaker_state("a/m") is BreakerState.OPEN
        changed = {"consecutive_failures": 3, "open_s": 10.0}
        await s.router.swap_routes({"r": route(target("a", breaker=changed), fallback=[target("bb")])})
        assert s.router.breaker_state("a/m") is BreakerState.CLOSED
        await s.router.swap_routes({"r": route(target("bb"))})
        assert s.router.breaker_state("a/m") is None
        assert s.registry.get_sample_value("quasar_engine_breaker_state", {"target": "a/m"}) is None


def test_routes_must_agree_on_a_shared_targets_breaker() -> None:
    routes = {
        "r": route(target("a")),
        "q": route(target("a", breaker={"consecutive_failures": 9})),
    }
    with pytest.raises(ValueError, match="route 'q' gives target a/m a breaker config other routes do not"):
        Router(routes, {"a": fake("a")})


async def test_metrics_go_to_a_private_registry_by_default() -> None:
    from prometheus_client import REGISTRY

    router = Router({"r": route(target("a"))}, {"a": fake("a")})
    await router.start()
    await router.infer("r", INPUTS, timeout_s=None, routing_key=1)
    labels = {"model": "r", "target": "a/m", "outcome": "ok"}
    assert REGISTRY.get_sample_value("quasar_engine_requests_total", labels) is None
    await router.close()


async def test_non_finite_outputs_of_non_finite_inputs_are_the_callers_not_the_targets() -> None:
    a, b = fake("a"), fake("bb")
    async with Setup({"r": route(target("a"), fallback=[target("bb")])}, a, b) as s:
        a.fail_with(BadOutput("output 'scores' holds 2 non-finite values of 2"))
        for value in (np.nan, np.inf, 3e38):  # more than the breaker's 2 consecutive failures
            absurd = {"features": np.full((2, 3), value, dtype=np.float32)}
            with pytest.raises(BadInput, match="inputs hold non-finite or overflowing values"):
                await s.router.infer("r", absurd, timeout_s=1.0, routing_key=1)
        assert s.router.breaker_state("a/m") is BreakerState.CLOSED
        assert b.calls == []
        # the same bad output for finite inputs is the target's fault: it falls back, and counts
        assert await s.target_of() == "bb/m"
