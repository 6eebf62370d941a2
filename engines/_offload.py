"""The one bounded helper that moves CPU-bound work (inference, model loading) off the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from engines.errors import EngineOverloaded, EngineUnavailable

T = TypeVar("T")


class Offloader:
    """A fixed pool of `max_workers` threads with at most `max_pending` calls waiting for one.

    Admission: a call is *in flight* from `run` until its function returns in a worker thread (or is
    dropped before starting). When `max_workers + max_pending` calls are already in flight, `run` raises
    `EngineOverloaded` at once instead of queueing: under overload a fast rejection is worth more than a
    queue whose tail has already missed its deadline.

    Timeouts and cancellation: the caller bounds a call with `asyncio.timeout`. Cancelling the awaiting
    coroutine cancels a call that has not started (it then never runs and leaves the count at once), but
    a thread cannot be killed, so a call already running keeps its slot until its function returns. The
    count is therefore decremented by the worker-side done callback of the concurrent future, never by
    the awaiter: a slot stays taken exactly as long as a thread is (or could still be) busy with it, which
    keeps the bound honest when callers keep timing out on a stuck backend.

    Not tied to one event loop; `close()` is idempotent and does not wait for running calls.
    """

    def __init__(self, max_workers: int, max_pending: int, *, thread_name_prefix: str = "quasar-offload") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending}")
        self.max_workers = max_workers
        self.max_pending = max_pending
        # ThreadPoolExecutor starts its threads lazily on submit, so the constructor does no work.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix=thread_name_prefix)
        # Incremented on the loop, decremented from worker threads (done callbacks): needs a real lock.
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Calls admitted and not finished: running, or waiting for a worker."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Calls admitted beyond the workers (an upper bound: workers may be about to pick them up)."""
        return max(0, self._in_flight - self.max_workers)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a worker thread and return its result (or raise its exception).

        Raises `EngineOverloaded` when `max_pending` calls already wait, `EngineUnavailable` after close.
        """
        with self._lock:
            if self._closed:
                raise EngineUnavailable("offloader is closed")
            if self._in_flight >= self.max_workers + self.max_pending:
                raise EngineOverloaded(
                    f"{self._in_flight} calls in flight on {self.max_workers} inference threads "
                    f"(at most {self.max_pending} may wait)"
                )
            self._in_flight += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        # Runs in the worker thread when fn returns, or at once when a queued call is cancelled.
        future.add_done_callback(self._release)
        # wrap_future cancels `future` when the awaiter is cancelled; that only succeeds if not yet running.
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Reject new calls and drop queued ones; running calls finish in their threads."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _release(self, _future: concurrent.futures.Future[Any] | None) -> None:
        with self._lock:
            self._in_flight -= 1
