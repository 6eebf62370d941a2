"""Shadow targets: called in the background with the same inputs, bounded, never answered from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from engines.config import RouteConfig
from engines.errors import EngineTimeout, EngineUnavailable
from engines.fake import FakeEngine
from engines.route_metrics import RouteMetrics
from engines.router import Router
from engines.shadow import DiffSink, ShadowCalls
from engines.shadow_diff import ShadowDiff
from engines.types import ModelRef, Tensors
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

    async def buggy() -> dict[str, np.ndarray]:
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


# Shadow diffs: each shadow answer compared with the caller's answer, in the shadow's background task.

FEATURES = {"features": np.array([[0.1, 0.9], [0.4, 0.2], [0.3, 0.7], [0.8, 0.5], [0.6, 0.05]], dtype=np.float32)}
HEADS = {"scores": ["click", "like"]}


def scorer(name: str, change: Callable[[np.ndarray], np.ndarray] = lambda scores: scores) -> FakeEngine:
    """Scores the rows with their features (two heads), changed by `change`."""

    async def answer(model: ModelRef, inputs: Tensors) -> dict[str, np.ndarray]:
        return {"scores": change(np.array(inputs["features"], dtype=np.float32))}

    return FakeEngine(name, answer)


def plus_on_like(scores: np.ndarray) -> np.ndarray:
    scores[:, 1] += 0.1
    return scores


class Diffs(Setup):
    """A `Setup` whose router hands its shadow diffs to `sink` (default: collects them in `diffs`)."""

    def __init__(self, routes: dict[str, RouteConfig], *engines: FakeEngine, sink: DiffSink | None = None) -> None:
        super().__init__(routes, *engines)
        self.diffs: list[ShadowDiff] = []
        self.registry = CollectorRegistry()
        self.router = Router(
            routes,
            self.engines,
            metrics=RouteMetrics(self.registry),
            clock=self.clock,
            on_diff=sink if sink is not None else self.diffs.append,
        )

    async def __aenter__(self) -> Diffs:
        await self.router.start()
        return self


async def test_shadow_answers_are_compared_head_by_head_into_histograms_and_the_sink() -> None:
    a, sh = scorer("a"), scorer("sh", plus_on_like)
    async with Diffs(shadowed(), a, sh) as s:
        s.router.describe_outputs("r", HEADS)
        call = await s.router.infer("r", FEATURES, timeout_s=1.0, routing_key=3)
        np.testing.assert_array_equal(call.outputs["scores"], FEATURES["features"])  # the primary's answer
        await s.router.join_shadow()
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="ok") == 1
        (diff,) = s.diffs
        assert (diff.model, diff.target, diff.primary, diff.rows) == ("r", "sh/m", "a/m", 5)
        assert list(diff.heads) == ["click", "like"]
        assert diff.heads["click"].mean_abs_delta == 0.0
        assert diff.heads["like"].mean_abs_delta == pytest.approx(0.1, abs=1e-6)
        for head, delta in (("click", 0.0), ("like", 0.1)):
            labels = {"model": "r", "target": "sh/m", "head": head}
            assert s.sample("quasar_shadow_score_delta_count", **labels) == 1
            assert s.sample("quasar_shadow_score_delta_sum", **labels) == pytest.approx(delta, abs=1e-6)
            assert s.sample("quasar_shadow_topk_overlap_sum", **labels) == 1.0
            assert s.sample("quasar_shadow_rank_correlation_sum", **labels) == pytest.approx(1.0)
            assert s.sample("quasar_shadow_rank_correlation_count", **labels) == 1
        assert s.sample("quasar_shadow_score_delta_bucket", model="r", target="sh/m", head="like", le="0.05") == 0
        assert s.sample("quasar_shadow_score_delta_bucket", model="r", target="sh/m", head="like", le="0.2") == 1


async def test_undescribed_outputs_are_labelled_by_column() -> None:
    async with Diffs(shadowed(), scorer("a"), scorer("sh")) as s:
        await s.router.infer("r", FEATURES, timeout_s=1.0, routing_key=3)
        await s.router.join_shadow()
        assert list(s.diffs[0].heads) == ["scores[0]", "scores[1]"]
        assert s.sample("quasar_shadow_topk_overlap_count", model="r", target="sh/m", head="scores[1]") == 1


async def test_a_failing_primary_skips_the_comparison_and_counts_no_primary() -> None:
    a, sh = scorer("a"), scorer("sh")
    a.fail_with(EngineUnavailable("down"))
    async with Diffs(shadowed(), a, sh) as s:
        with pytest.raises(EngineUnavailable):
            await s.router.infer("r", FEATURES, timeout_s=1.0, routing_key=3)
        async with asyncio.timeout(5):  # a guard, not a wait: the shadow must not wait for an answer that never comes
            await s.router.join_shadow()
        assert len(sh.calls) == 1
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="no_primary") == 1
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="ok") == 0
        assert s.diffs == []
        assert s.sample("quasar_shadow_score_delta_count", model="r", target="sh/m", head="scores[0]") == 0


async def test_a_fallback_answer_is_what_the_shadow_is_compared_with() -> None:
    a, b, sh = scorer("a"), scorer("bb", plus_on_like), scorer("sh")
    a.fail_with(EngineUnavailable("down"))
    routes = {
        "r": RouteConfig.model_validate(
            {"targets": [target("a")], "fallback": [target("bb")], "shadow": [target("sh")]}
        )
    }
    async with Diffs(routes, a, b, sh) as s:
        s.router.describe_outputs("r", HEADS)
        assert (await s.router.infer("r", FEATURES, timeout_s=1.0, routing_key=3)).target == "bb/m"
        await s.router.join_shadow()
        (diff,) = s.diffs
        assert diff.primary == "bb/m"
        assert diff.heads["like"].mean_abs_delta == pytest.approx(0.1, abs=1e-6)


async def test_an_incomparable_shadow_answer_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    a, sh = scorer("a"), scorer("sh", lambda scores: scores[:3])  # fewer rows than the primary
    async with Diffs(shadowed(), a, sh) as s:
        with caplog.at_level(logging.WARNING, logger="engines.shadow"):
            for _ in range(2):
                call = await s.router.infer("r", FEATURES, timeout_s=1.0, routing_key=3)
                np.testing.assert_array_equal(call.outputs["scores"], FEATURES["features"])
                await s.router.join_shadow()
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="incomparable") == 2
        assert s.diffs == []
        warnings = [r for r in caplog.records if "cannot be compared" in r.getMessage()]
        assert len(warnings) == 1
        assert "(5, 2) by the primary, (3, 2) by the shadow" in warnings[0].getMessage()


async def test_the_comparison_sees_the_answer_as_given_even_if_the_caller_changes_it() -> None:
    async with Diffs(shadowed(), scorer("a"), scorer("sh")) as s:
        call = await s.router.infer("r", FEATURES, timeout_s=1.0, routing_key=3)
        call.outputs["scores"] += 5.0  # the caller owns its outputs; the shadow answered FEATURES as well
        await s.router.join_shadow()
        assert s.diffs[0].heads["scores[0]"].mean_abs_delta == 0.0


async def test_the_route_sets_k_of_the_topk_overlap() -> None:
    def swap_best_two(scores: np.ndarray) -> np.ndarray:
        scores[[3, 4], 0] = scores[[4, 3], 0]  # click: rows 3 (0.8) and 4 (0.6) trade places
        return scores

    for top_k, overlap in ((1, 0.0), (2, 1.0)):
        routes = {"r": shadowed()["r"].model_copy(update={"shadow_top_k": top_k})}
        async with Diffs(routes, scorer("a"), scorer("sh", swap_best_two)) as s:
            await s.router.infer("r", FEATURES, timeout_s=1.0, routing_key=3)
            await s.router.join_shadow()
            assert s.diffs[0].heads["scores[0]"].topk_overlap == overlap


async def test_the_caller_never_waits_for_the_comparison_and_a_cancelled_caller_leaves_no_waiter() -> None:
    a, sh = scorer("a"), scorer("sh")
    gate = asyncio.Event()
    a.block_until(gate)  # the primary never answers: the caller gives up
    async with Diffs(shadowed(), a, sh) as s:
        caller = asyncio.create_task(s.router.infer("r", FEATURES, timeout_s=None, routing_key=3))
        await a.entered.wait()
        await sh.entered.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        async with asyncio.timeout(5):  # a guard, not a wait: join must not hang on a primary that never comes
            await s.router.join_shadow()
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="no_primary") == 1
        assert s.router._shadow.in_flight("r") == 0
        assert s.diffs == []


async def test_close_cancels_a_shadow_waiting_for_the_primary_answer() -> None:
    a, sh = scorer("a"), scorer("sh")
    a.block_until(asyncio.Event())
    s = Diffs(shadowed(), a, sh)
    await s.router.start()
    caller = asyncio.create_task(s.router.infer("r", FEATURES, timeout_s=None, routing_key=3))
    await a.entered.wait()
    await sh.entered.wait()
    async with asyncio.timeout(5):  # a guard: close must not wait for the primary
        await s.router.close()
    assert s.router._shadow.in_flight("r") == 0
    assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="no_primary") == 0
    assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="ok") == 0
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_a_failing_sink_is_logged_once_and_changes_no_outcome(caplog: pytest.LogCaptureFixture) -> None:
    received: list[ShadowDiff] = []

    def broken(diff: ShadowDiff) -> None:
        received.append(diff)
        raise RuntimeError("sink bug")

    async with Diffs(shadowed(), scorer("a"), scorer("sh"), sink=broken) as s:
        with caplog.at_level(logging.WARNING, logger="engines.shadow"):
            for _ in range(2):
                await s.router.infer("r", FEATURES, timeout_s=1.0, routing_key=3)
                await s.router.join_shadow()
        assert len(received) == 2
        assert s.sample("quasar_engine_shadow_total", model="r", target="sh/m", outcome="ok") == 2
        failures = [r for r in caplog.records if "sink failed" in r.getMessage()]
        assert len(failures) == 1
        assert failures[0].exc_info is not None


def test_describe_outputs_rejects_repeated_or_empty_head_names() -> None:
    router = Router(shadowed(), {"a": scorer("a"), "sh": scorer("sh")})
    with pytest.raises(ValueError, match=r"given more than once: \['click'\]"):
        router.describe_outputs("r", {"scores": ["click", "like"], "other": ["click"]})
    with pytest.raises(ValueError, match="empty head name"):
        router.describe_outputs("r", {"scores": ["click", ""]})
