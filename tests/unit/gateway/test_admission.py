"""Admission: refuses at once (limit, expired or cancelled caller, draining), and learns from latency."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import pytest

from gateway.admission import Admission
from gateway.concurrency_limit import LimitSettings
from gateway.metrics import GatewayMetrics
from gateway.quality import QualitySettings
from gateway.settings import GatewaySettings
from gateway.status import RequestRejected
from remix.failures import StepTimeout


@dataclass
class Caller:
    """A caller as admission sees it (the servicer passes the grpc context)."""

    remaining_s: float | None = 5.0
    gone: bool = False

    def time_remaining(self) -> float | None:
        return self.remaining_s

    def cancelled(self) -> bool:
        return self.gone


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def admission(clock: FakeClock, *, initial: int = 2) -> Admission:
    return Admission(
        8,
        GatewayMetrics(),
        limit=LimitSettings(min_limit=1, max_limit=8, initial_limit=initial, target_latency_s=0.05),
        quality=QualitySettings(target_latency_s=0.02, narrowed_quality=0.5, smoothing=1.0),
        clock=clock,
    )


async def test_over_the_limit_is_resource_exhausted_with_a_clear_message() -> None:
    gate = admission(FakeClock())
    async with gate.admit(Caller()), gate.admit(Caller()):
        with pytest.raises(RequestRejected) as refused:
            async with gate.admit(Caller()):
                pytest.fail("admitted over the limit")
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 2 requests in flight" in str(refused.value)
    assert gate.in_flight == 0


async def test_an_expired_caller_gets_deadline_exceeded_and_takes_no_slot() -> None:
    gate = admission(FakeClock())
    with pytest.raises(RequestRejected) as refused:
        async with gate.admit(Caller(remaining_s=0.0)):
            pytest.fail("work started for an expired caller")
    assert refused.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert gate.in_flight == 0


async def test_a_cancelled_caller_gets_no_work() -> None:
    gate = admission(FakeClock())
    with pytest.raises(asyncio.CancelledError):
        async with gate.admit(Caller(gone=True)):
            pytest.fail("work started for a cancelled caller")
    assert gate.in_flight == 0


async def test_draining_is_unavailable() -> None:
    gate = admission(FakeClock())
    gate.start_draining()
    with pytest.raises(RequestRejected) as refused:
        async with gate.admit(Caller()):
            pytest.fail("admitted while draining")
    assert refused.value.code is grpc.StatusCode.UNAVAILABLE


async def test_slow_requests_narrow_quality_first_then_shrink_the_limit() -> None:
    clock = FakeClock()
    gate = admission(clock, initial=4)
    async with gate.admit(Caller()) as ticket:
        assert ticket.quality == 1.0
        clock.now_s += 0.03  # above the quality target (0.02), under the limit's (0.05)
    assert gate.quality == 0.5
    assert gate.limit == 4, "degrade before rejecting: the limit holds"
    async with gate.admit(Caller()) as ticket:
        assert ticket.quality == 0.5
        clock.now_s += 0.2
    assert gate.limit == 3


async def test_a_timed_out_request_shrinks_the_limit() -> None:
    clock = FakeClock()
    gate = admission(clock, initial=4)
    with pytest.raises(StepTimeout):
        async with gate.admit(Caller()):
            raise StepTimeout("did not finish", step="rank")
    assert gate.limit == 3
    assert gate.in_flight == 0


async def test_without_adaptive_settings_the_limit_is_the_fixed_ceiling() -> None:
    gate = Admission(3, GatewayMetrics())
    assert gate.limit == 3
    assert gate.quality == 1.0


def test_the_adaptive_ceiling_must_be_max_in_flight() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        Admission(3, GatewayMetrics(), limit=LimitSettings(1, 5, 2, 0.05))


@pytest.mark.parametrize(("max_active_calls", "yields"), [(None, False), (1, True)])
async def test_a_gateway_that_runs_one_call_at_a_time_admits_requests_that_yield_between_steps(
    max_active_calls: int | None, yields: bool
) -> None:
    settings = GatewaySettings(overload_max_active_calls=max_active_calls)
    gate = Admission.from_settings(settings, GatewayMetrics())
    async with gate.admit(Caller()) as ticket:
        assert ticket.yield_between_steps is yields
