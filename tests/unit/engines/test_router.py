from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import numpy as np
import pytest

from engines.base import Models
from engines.config import RouteConfig
from engines.errors import BadOutput, EngineTimeout, EngineUnavailable, ModelNotFound
from engines.fake import FakeEngine
from engines.router import RoutedCall, Router, routing_point
from engines.types import ModelRef, Tensors

INPUTS = {"features": np.ones((2, 3), dtype=np.float32)}


def fake(name: str, *models: str) -> FakeEngine:
    """An engine whose answer says who answered: scores filled with len(name)."""

    async def answer(model: ModelRef, inputs: Tensors) -> dict[str, np.ndarray]:
        return {"scores": np.full(len(inputs["features"]), len(name), dtype=np.float32)}

    engine = FakeEngine(name, answer, version=f"{name}-v1")
    if models:
        engine = FakeEngine(name, {m: {"scores": np.zeros(2, np.float32)} for m in models}, version=f"{name}-v1")
    return engine


def route(*targets: dict[str, Any], fallback: list[dict[str, Any]] | None = None) -> RouteConfig:
    return RouteConfig.model_validate({"targets": list(targets), "fallback": fallback or []})


async def started(routes: dict[str, RouteConfig], *engines: FakeEngine) -> Router:
    router = Router(routes, {engine.name: engine for engine in engines})
    await router.start()
    return router


async def test_answers_from_the_single_target() -> None:
    router = await started({"ranker": route({"engine": "a", "model": "m"})}, fake("a"))
    call = await router.infer("ranker", INPUTS, timeout_s=1.0, routing_key=7)
    assert isinstance(call, RoutedCall)
    assert isinstance(router, Models)
    assert (call.target, call.version, call.degraded_reason) == ("a/m", "a-v1", None)
    np.testing.assert_array_equal(call.outputs["scores"], [1, 1])


async def test_target_label_includes_a_pinned_version() -> None:
    router = await started({"ranker": route({"engine": "a", "model": "m", "version": "a-v1"})}, fake("a"))
    call = await router.infer("ranker", INPUTS, timeout_s=None, routing_key=1)
    assert call.target == "a/m/a-v1"


def test_routing_point_is_stable_across_processes() -> None:
    # Fixed values: a change of hash (or Python's salted hash()) would reshuffle every A/B assignment.
    assert routing_point("feed_ranker", 42) == 0.6579489290283881
    assert routing_point("feed_ranker", 43) != routing_point("feed_ranker", 42)
    assert routing_point("other_model", 42) != routing_point("feed_ranker", 42)


async def test_choice_is_sticky_per_key_and_follows_weights() -> None:
    routes = {"ranker": route({"engine": "a", "model": "m", "weight": 3}, {"engine": "bb", "model": "m", "weight": 1})}
    router = await started(routes, fake("a"), fake("bb"))
    first = {key: (await router.infer("ranker", INPUTS, timeout_s=None, routing_key=key)).target for key in range(4000)}
    again = Router(routes, router._engines)  # a fresh router (another process) agrees
    await again.start()
    for key in range(0, 4000, 37):
        assert (await again.infer("ranker", INPUTS, timeout_s=None, routing_key=key)).target == first[key]
    share = Counter(first.values())["a/m"] / len(first)
    assert 0.72 < share < 0.78


async def test_a_zero_weight_target_is_never_chosen() -> None:
    routes = {"ranker": route({"engine": "a", "model": "m", "weight": 0}, {"engine": "bb", "model": "m"})}
    router = await started(routes, fake("a"), fake("bb"))
    targets = {(await router.infer("ranker", INPUTS, timeout_s=None, routing_key=k)).target for k in range(300)}
    assert targets == {"bb/m"}


async def test_falls_back_on_error_and_says_so() -> None:
    a, b = fake("a"), fake("bb")
    a.fail_with(EngineUnavailable("connection refused", target="a"))
    router = await started(
        {"ranker": route({"engine": "a", "model": "m"}, fallback=[{"engine": "bb", "model": "m"}])}, a, b
    )
    call = await router.infer("ranker", INPUTS, timeout_s=1.0, routing_key=7)
    assert call.target == "bb/m"
    assert call.version == "bb-v1"
    assert call.degraded_reason == "ranker: fell back from a/m (unavailable)"
    np.testing.assert_array_equal(call.outputs["scores"], [2, 2])


async def test_falls_back_on_timeout_with_the_remaining_time() -> None:
    a, b = fake("a"), fake("bb")
    a.block_until(asyncio.Event())  # never set: only the target's own timeout ends the call
    routes = {
        "ranker": route({"engine": "a", "model": "m", "timeout_s": 0.05}, fallback=[{"engine": "bb", "model": "m"}])
    }
    router = await started(routes, a, b)
    call = await router.infer("ranker", INPUTS, timeout_s=5.0, routing_key=7)
    assert call.target == "bb/m"
    assert call.degraded_reason == "ranker: fell back from a/m (timed out)"
    assert a.calls[0].timeout_s == 0.05
    assert b.calls[0].timeout_s is not None
    assert 4.0 < b.calls[0].timeout_s < 4.96


async def test_call_timeout_is_the_smaller_of_target_and_remaining() -> None:
    a = fake("a")
    router = await started({"r": route({"engine": "a", "model": "m", "timeout_s": 0.5})}, a)
    await router.infer("r", INPUTS, timeout_s=0.2, routing_key=1)
    await router.infer("r", INPUTS, timeout_s=None, routing_key=1)
    first, second = (call.timeout_s for call in a.calls)
    assert first is not None
    assert 0.15 < first <= 0.2
    assert second == 0.5
    plain = fake("bb")
    router = await started({"r": route({"engine": "bb", "model": "m"})}, plain)
    await router.infer("r", INPUTS, timeout_s=None, routing_key=1)
    assert plain.calls[0].timeout_s is None


async def test_all_targets_failing_raises_the_last_error_with_every_attempt() -> None:
    a, b = fake("a"), fake("bb")
    a.fail_with(EngineUnavailable("refused"))
    b.fail_with(BadOutput("nan scores"))
    router = await started(
        {"ranker": route({"engine": "a", "model": "m"}, fallback=[{"engine": "bb", "model": "m"}])}, a, b
    )
    with pytest.raises(BadOutput) as raised:
        await router.infer("ranker", INPUTS, timeout_s=1.0, routing_key=7)
    message = str(raised.value)
    assert "ranker: no target answered; tried a/m (unavailable: refused), bb/m (bad output: nan scores)" in message
    assert raised.value.model == "ranker"
    assert isinstance(raised.value.__cause__, BadOutput)


async def test_no_fallback_is_tried_when_the_budget_is_spent() -> None:
    a, b = fake("a"), fake("bb")
    a.block_until(asyncio.Event())
    router = await started(
        {"ranker": route({"engine": "a", "model": "m"}, fallback=[{"engine": "bb", "model": "m"}])}, a, b
    )
    with pytest.raises(EngineTimeout, match=r"no time left within 0.05s for bb/m"):
        await router.infer("ranker", INPUTS, timeout_s=0.05, routing_key=7)
    assert b.calls == []


async def test_a_fallback_equal_to_the_primary_is_not_retried() -> None:
    a = fake("a")
    a.fail_with(EngineUnavailable("down"))
    router = await started({"r": route({"engine": "a", "model": "m"}, fallback=[{"engine": "a", "model": "m"}])}, a)
    with pytest.raises(EngineUnavailable):
        await router.infer("r", INPUTS, timeout_s=None, routing_key=1)
    assert len(a.calls) == 1


async def test_cancellation_is_not_a_reason_to_fall_back() -> None:
    a, b = fake("a"), fake("bb")
    a.block_until(asyncio.Event())
    router = await started({"r": route({"engine": "a", "model": "m"}, fallback=[{"engine": "bb", "model": "m"}])}, a, b)
    task = asyncio.create_task(router.infer("r", INPUTS, timeout_s=None, routing_key=1))
    await a.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.calls == []


async def test_unknown_logical_model() -> None:
    router = await started({"ranker": route({"engine": "a", "model": "m"})}, fake("a"))
    with pytest.raises(ModelNotFound, match=r"no route for logical model 'nope'; routes: \['ranker'\]"):
        await router.infer("nope", INPUTS, timeout_s=None, routing_key=1)
    with pytest.raises(ModelNotFound):
        await router.metadata("nope")


async def test_start_fails_for_a_target_its_engine_does_not_serve() -> None:
    router = Router({"ranker": route({"engine": "a", "model": "typo"})}, {"a": fake("a", "m")})
    with pytest.raises(ModelNotFound, match="route 'ranker' target a/typo"):
        await router.start()
    assert not await router.ready()


def test_a_route_naming_an_unknown_engine_is_a_programmer_error() -> None:
    with pytest.raises(ValueError, match="names engine 'zz', which is not defined"):
        Router({"r": route({"engine": "zz", "model": "m"})}, {"a": fake("a")})


async def test_swap_routes_is_atomic_for_calls_in_progress() -> None:
    a, b = fake("a"), fake("bb")
    gate = asyncio.Event()
    a.block_until(gate)
    router = await started({"r": route({"engine": "a", "model": "m"})}, a, b)
    in_progress = asyncio.create_task(router.infer("r", INPUTS, timeout_s=None, routing_key=1))
    await a.entered.wait()

    await router.swap_routes({"r": route({"engine": "bb", "model": "m"})})
    after = await router.infer("r", INPUTS, timeout_s=None, routing_key=1)
    gate.set()
    assert (await in_progress).target == "a/m"
    assert after.target == "bb/m"
    assert router.routes["r"].targets[0].engine == "bb"


async def test_a_bad_swap_leaves_the_old_routes_in_force() -> None:
    router = await started({"r": route({"engine": "a", "model": "m"})}, fake("a", "m"))
    with pytest.raises(ValueError, match="not defined"):
        await router.swap_routes({"r": route({"engine": "zz", "model": "m"})})
    with pytest.raises(ModelNotFound):
        await router.swap_routes({"r": route({"engine": "a", "model": "typo"})})
    assert (await router.infer("r", INPUTS, timeout_s=None, routing_key=1)).target == "a/m"


async def test_lifecycle_covers_every_engine() -> None:
    a, b = fake("a"), fake("bb")
    router = Router({"r": route({"engine": "a", "model": "m"})}, {"a": a, "bb": b})
    assert not await router.ready()
    await router.start()
    assert await router.ready()
    assert a.started
    assert b.started
    assert (await router.metadata("r")).version == "a-v1"
    await router.close()
    assert a.closed
    assert b.closed
    assert not await router.ready()
