"""Shadow targets: called in the background with the same inputs, bounded, never answered from."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from engines.config import RouteConfig
from engines.errors import EngineTimeout, EngineUnavailable
from engines.fake import FakeEngine
from engines.route_metrics import RouteMetrics
from engines.shadow import ShadowCalls
from tests.unit.engines.test_router_resilience import INPUTS, Setup, fake, target


def shadowed(max_in_flight: int = 4, **shadow_fields: Any) -> dict[str, RouteConfig]:
    config = {"targets": [target("a")], "shadow": [target("sh", **shadow_fields)]}
    return {"r": RouteConfig.model_validate({**config, "max_shadow_in_flight": max_in_flight})}


async def test_a_shadow_target_gets_the_same_inputs_and_its_answer_is_discarded() -> None:
    a, sh = fake("a"), fake("sh")
    async with Setup(shadowed(), a, sh) as s:
        call = await s.router.infer("r", INPUTS, timeout_s=1.0, routing_key=3)
        await s.router.join_shadow()
        assert call.target == "a/m"
        np.testing.assert_array_equal(call.outputs["scores"], [1, 1])  # len("a"), not len("sh")
        assert len(sh.calls) == 1
        assert sh.calls[0].inputs["features"] is INPUTS["features"]
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="ok") == 1
        assert s.sample("quasar_engine_requests_total", model="r", target="sh/m", outcome="ok") == 0


async def test_the_answer_never_waits_for_a_shadow_call() -> None:
    a, sh = fake("a"), fake("sh")
    gate = asyncio.Event()
    sh.block_until(gate)
    async with Setup(shadowed(), a, sh) as s:
        call = await s.router.infer("r", INPUTS, timeout_s=1.0, routing_key=3)
        assert call.target == "a/m"
        await sh.entered.wait()
        assert s.router._shadow.in_flight("r") == 1
        gate.set()
        await s.router.join_shadow()
        assert s.router._shadow.in_flight("r") == 0


async def test_over_the_bound_shadow_calls_are_dropped_and_counted() -> None:
    a, sh = fake("a"), fake("sh")
    gate = asyncio.Event()
    sh.block_until(gate)
    async with Setup(shadowed(max_in_flight=2), a, sh) as s:
        for _ in range(5):
            assert (await s.router.infer("r", INPUTS, timeout_s=1.0, routing_key=3)).target == "a/m"
        assert s.router._shadow.in_flight("r") == 2
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="dropped") == 3
        gate.set()
        await s.router.join_shadow()
        assert len(sh.calls) == 2
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="ok") == 2
        await s.router.infer("r", INPUTS, timeout_s=1.0, routing_key=3)  # room again once they finished
        await s.router.join_shadow()
        assert len(sh.calls) == 3


async def test_shadow_failures_are_counted_and_never_reach_the_answer() -> None:
    a, sh = fake("a"), fake("sh")
    async with Setup(shadowed(), a, sh) as s:
        sh.fail_with(EngineUnavailable("down"))
        call = await s.router.infer("r", INPUTS, timeout_s=1.0, routing_key=3)
        await s.router.join_shadow()
        assert (call.target, call.degraded_reason) == ("a/m", None)
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="error") == 1
        sh.fail_with(None)
        sh.block_until(asyncio.Event())  # never set: only the shadow's timeout (the request's budget) ends it
        await s.router.infer("r", INPUTS, timeout_s=0.02, routing_key=3)
        await s.router.join_shadow()
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="timeout") == 1


async def test_shadow_calls_get_their_own_timeout_capped_by_the_request_budget() -> None:
    a, sh = fake("a"), fake("sh")
    async with Setup(shadowed(timeout_s=0.25), a, sh) as s:
        await s.router.infer("r", INPUTS, timeout_s=1.0, routing_key=3)
        await s.router.infer("r", INPUTS, timeout_s=0.1, routing_key=3)
        await s.router.join_shadow()
        assert [c.timeout_s for c in sh.calls] == [0.25, 0.1]


async def test_a_failing_shadow_opens_its_breaker_and_is_then_skipped() -> None:
    a, sh = fake("a"), fake("sh")
    async with Setup(shadowed(), a, sh) as s:
        sh.fail_with(EngineTimeout("slow"))
        for _ in range(3):
            await s.router.infer("r", INPUTS, timeout_s=1.0, routing_key=3)
            await s.router.join_shadow()
        assert len(sh.calls) == 2
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="breaker_open") == 1


async def test_close_cancels_running_shadow_calls() -> None:
    a, sh = fake("a"), fake("sh")
    sh.block_until(asyncio.Event())
    s = Setup(shadowed(), a, sh)
    await s.router.start()
    await s.router.infer("r", INPUTS, timeout_s=None, routing_key=3)
    await sh.entered.wait()
    await s.router.close()
    assert s.router._shadow.in_flight("r") == 0
    assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="ok") == 0


async def test_an_unexpected_shadow_exception_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    metrics = RouteMetrics()
    shadow = ShadowCalls(metrics)

    async def buggy() -> None:
        raise KeyError("bug")

    assert shadow.submit("r", "x/m", 1, buggy)
    await shadow.join()
    assert "shadow call failed unexpectedly" in caplog.text
    labels = {"model": "r", "target": "x/m", "outcome": "error"}
    assert metrics.registry.get_sample_value("quasar_engine_shadow_total", labels) == 1


def test_shadow_targets_must_name_defined_engines() -> None:
    from engines.router import Router

    with pytest.raises(ValueError, match=r"route 'r' shadow\[0\] names engine 'sh'"):
        Router(shadowed(), {"a": FakeEngine("a", {})})
