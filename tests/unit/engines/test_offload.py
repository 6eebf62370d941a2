from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from engines._offload import Offloader
from engines.errors import EngineOverloaded, EngineUnavailable


@pytest.fixture
def offloader() -> Iterator[Offloader]:
    pool = Offloader(max_workers=1, max_pending=1)
    yield pool
    pool.close()


class Holder:
    """A function for the pool that reports when it started and returns when released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> str:
        self.started.set()
        self.release.wait(timeout=30)
        return "held"

    async def running(self) -> None:
        assert await asyncio.to_thread(self.started.wait, 30)


async def test_runs_in_a_worker_thread_and_returns_its_result(offloader: Offloader) -> None:
    caller = threading.get_ident()
    assert await offloader.run(lambda a, b: (a + b, threading.get_ident()), 2, 3) != (5, caller)
    assert (await offloader.run(lambda a, b: a + b, 2, 3)) == 5
    assert offloader.in_flight == 0


async def test_propagates_the_function_exception(offloader: Offloader) -> None:
    def boom() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await offloader.run(boom)
    assert offloader.in_flight == 0


async def test_rejects_at_once_when_max_pending_calls_already_wait(offloader: Offloader) -> None:
    holder = Holder()
    running = asyncio.create_task(offloader.run(holder))
    await holder.running()
    waiting = asyncio.create_task(offloader.run(lambda: "queued"))
    await asyncio.sleep(0)  # let the task reach run() and be admitted
    assert (offloader.in_flight, offloader.waiting) == (2, 1)

    with pytest.raises(EngineOverloaded, match=r"2 calls in flight on 1 inference threads \(at most 1 may wait\)"):
        await offloader.run(lambda: "rejected")

    holder.release.set()
    assert await running == "held"
    assert await waiting == "queued"
    assert offloader.in_flight == 0


async def test_cancelling_a_queued_call_frees_its_slot_at_once(offloader: Offloader) -> None:
    holder = Holder()
    running = asyncio.create_task(offloader.run(holder))
    await holder.running()
    ran = threading.Event()
    queued = asyncio.create_task(offloader.run(ran.set))
    await asyncio.sleep(0)
    assert offloader.in_flight == 2

    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert offloader.in_flight == 1  # it never started, so it no longer counts

    holder.release.set()
    await running
    assert not ran.is_set()
    assert offloader.in_flight == 0


async def test_a_timed_out_running_call_keeps_its_slot_until_its_thread_returns(offloader: Offloader) -> None:
    holder = Holder()
    scopes: list[asyncio.Timeout] = []

    async def call_with_timeout() -> str:
        async with asyncio.timeout(None) as scope:
            scopes.append(scope)
            return await offloader.run(holder)

    call = asyncio.create_task(call_with_timeout())
    await holder.running()
    scopes[0].reschedule(asyncio.get_running_loop().time())  # expire now, while the thread is busy
    with pytest.raises(TimeoutError):
        await call
    # The awaiter gave up, the thread did not: the slot is still taken.
    assert offloader.in_flight == 1
    behind = asyncio.create_task(offloader.run(lambda: "behind"))
    await asyncio.sleep(0)
    with pytest.raises(EngineOverloaded):
        await offloader.run(lambda: "over the bound")

    holder.release.set()
    # `behind` runs only after the held call returned, whose release precedes it in the same worker.
    assert await behind == "behind"
    assert offloader.in_flight == 0


async def test_close_rejects_new_calls_and_drops_queued_ones(offloader: Offloader) -> None:
    holder = Holder()
    running = asyncio.create_task(offloader.run(holder))
    await holder.running()
    queued = asyncio.create_task(offloader.run(lambda: "never"))
    await asyncio.sleep(0)

    offloader.close()
    with pytest.raises(asyncio.CancelledError):
        await queued
    with pytest.raises(EngineUnavailable, match="closed"):
        await offloader.run(lambda: None)
    holder.release.set()
    assert await running == "held"
    assert offloader.in_flight == 0


@pytest.mark.parametrize(("workers", "pending"), [(0, 1), (1, -1)])
def test_rejects_bad_bounds(workers: int, pending: int) -> None:
    with pytest.raises(ValueError, match="must be >="):
        Offloader(workers, pending)
