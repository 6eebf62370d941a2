"""Shadow calls: a route's shadow targets get a copy of its traffic, in the background, bounded; each
shadow answer is compared with the primary's answer to the same call (`engines.shadow_diff`)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engines.breaker import CircuitOpen
from engines.errors import EngineError, EngineTimeout
from engines.route_metrics import RouteMetrics
from engines.shadow_diff import Incomparable, ShadowDiff, compare

log = logging.getLogger(__name__)

DiffSink = Callable[[ShadowDiff], None]
"""Receives every shadow diff, from the shadow's background task; what it raises is logged, never passed on."""


@dataclass(frozen=True)
class PrimaryAnswer:
    """The answer the caller got: `target` is the label of the target that gave it (primary or fallback),
    `outputs` a copy the caller cannot change under the comparison."""

    target: str
    outputs: Mapping[str, np.ndarray]

    @classmethod
    def snapshot(cls, target: str, outputs: Mapping[str, np.ndarray]) -> PrimaryAnswer:
        # A copy: the caller owns its outputs and may change them in place before the comparison runs.
        return cls(target, {name: np.array(values) for name, values in outputs.items()})


@dataclass(frozen=True)
class DiffSpec:
    """What a shadow answer is compared with, and how. `answer` is resolved by whoever answers the caller,
    on every way out: the `PrimaryAnswer`, or None when the caller got none (failure, cancellation).
    `heads`: see `engines.shadow_diff.compare`."""

    answer: asyncio.Future[PrimaryAnswer | None]
    heads: Mapping[str, Sequence[str]] | None
    top_k: int


class ShadowCalls:
    """Runs shadow calls as background tasks; counts their outcomes, compares their answers.

    The caller never awaits a shadow call, so it cannot change an answer or wait for one; what it does
    cost is a task on the same event loop, and the comparison's CPU time there. Per logical model at
    most `bound` calls run at once, comparisons included (the count survives route swaps, so a swap
    cannot double it); `submit` beyond that drops the call and counts it as `dropped`.

    A call submitted with a `DiffSpec` waits, once answered, for the primary's answer, compares the two,
    records the figures in the shadow histograms and hands a `ShadowDiff` to `on_diff`. Outcomes: ok
    (answered and compared; without a `DiffSpec`: answered), no_primary, incomparable, timeout, error,
    dropped, breaker_open (see `RouteMetrics`); a call cancelled by `close` counts none.
    """

    def __init__(self, metrics: RouteMetrics, *, on_diff: DiffSink | None = None) -> None:
        self._metrics = metrics
        self._on_diff = on_diff
        self._in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_incomparable: set[tuple[str, str]] = set()
        self._sink_failed = False

    def in_flight(self, model: str) -> int:
        return self._in_flight[model]

    def submit(
        self,
        model: str,
        target: str,
        bound: int,
        call: Callable[[], Awaitable[Mapping[str, np.ndarray]]],
        *,
        diff: DiffSpec | None = None,
    ) -> bool:
        """Start `call()` in the background unless `model` already has `bound` running; True if started.
        With `diff`, its answer is compared with `diff.answer` once both exist."""
        if self._in_flight[model] >= bound:
            self._metrics.shadow.labels(model, target, "dropped").inc()
            return False
        self._in_flight[model] += 1
        task = asyncio.create_task(self._run(model, target, call, diff), name=f"shadow {model} -> {target}")
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)
        return True

    async def join(self) -> None:
        """Wait until the shadow calls running now have finished (tests wait on this, never on sleeps)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel every running shadow call (or comparison, or wait for a primary answer) and wait for them."""
        for task in self._tasks:
            task.cancel()
        await self.join()

    async def _run(
        self,
        model: str,
        target: str,
        call: Callable[[], Awaitable[Mapping[str, np.ndarray]]],
        diff: DiffSpec | None,
    ) -> None:
        outcome: str | None = None
        try:
            outputs = await call()
            outcome = "ok" if diff is None else await self._compare(model, target, outputs, diff)
        except CircuitOpen:
            outcome = "breaker_open"
        except EngineTimeout:
            outcome = "timeout"
        except EngineError:
            outcome = "error"
        except Exception:  # a bug must not vanish with the task, nor reach anyone's answer: log it loudly
            log.exception("shadow call failed unexpectedly", extra={"model": model, "target": target})
            outcome = "error"
        finally:
            self._in_flight[model] -= 1
            if outcome is not None:  # None: cancelled (router closing), not a shadow outcome
                self._metrics.shadow.labels(model, target, outcome).inc()

    async def _compare(self, model: str, target: str, outputs: Mapping[str, np.ndarray], diff: DiffSpec) -> str:
        """Wait for the primary's answer, compare, record; the outcome."""
        # wait(), not `await diff.answer`: cancelling this task must not cancel the future other shadows share.
        await asyncio.wait((diff.answer,))
        primary = None if diff.answer.cancelled() else diff.answer.result()
        if primary is None:
            return "no_primary"
        try:
            comparison = compare(primary.outputs, outputs, diff.heads, diff.top_k)
        except Incomparable as error:
            self._warn_incomparable(model, target, error)
            return "incomparable"
        result = ShadowDiff(
            model=model, target=target, primary=primary.target, rows=comparison.rows, heads=comparison.heads
        )
        self._record(result)
        self._deliver(result)
        return "ok"

    def _record(self, diff: ShadowDiff) -> None:
        metrics = self._metrics
        for head, figures in diff.heads.items():
            labels = (diff.model, diff.target, head)
            metrics.shadow_score_delta.labels(*labels).observe(figures.mean_abs_delta)
            metrics.shadow_topk_overlap.labels(*labels).observe(figures.topk_overlap)
            if figures.kendall_tau is not None:
                metrics.shadow_rank_correlation.labels(*labels).observe(figures.kendall_tau)

    def _deliver(self, diff: ShadowDiff) -> None:
        if self._on_diff is None:
            return
        try:
            self._on_diff(diff)
        except Exception:  # the sink's bug is not the shadow's outcome; log the first loudly, not every call
            if self._sink_failed:
                log.debug("shadow diff sink failed again", exc_info=True)
            else:
                self._sink_failed = True
                log.exception("shadow diff sink failed; later failures are logged at debug level")

    def _warn_incomparable(self, model: str, target: str, error: Incomparable) -> None:
        # Once per (model, target) at warning level: the same mismatch would otherwise log on every call.
        key = (model, target)
        if key in self._warned_incomparable:
            log.debug("shadow answer incomparable: %s", error, extra={"model": model, "target": target})
            return
        self._warned_incomparable.add(key)
        log.warning(
            "shadow answers of %s for %s cannot be compared with the primary's (counted as incomparable): %s",
            target,
            model,
            error,
            extra={"model": model, "target": target},
        )
