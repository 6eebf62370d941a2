"""Online model health: the gateway samples model calls into per-(model, release) window sketches, merges
them across worker processes through a state directory, compares them with the release's offline stats
and exports the result as Prometheus gauges.

On disk, under `<state_dir>/health/`:

- `<model>/<release>/<worker>.kll` (names percent-encoded): a worker's sketches of the current window,
  rewritten atomically every flush; `<worker>.prev.kll`: its final sketches of the window before. Each
  records the window's start, so a window is merged from the files of every worker that recorded it
  (files of other windows, or older than `window_s` by mtime, are ignored: a dead worker's leftovers).
- `history.jsonl`: one line per (model, release, name) and flush (`final` at a window's close), for
  drift-over-time plots. Only worker `HISTORY_WORKER` writes it: every worker evaluates the same merged
  window, so one copy is enough.
- `shadow.jsonl`: one line per shadow diff (every worker appends its own, one `write` per batch).

The gauges show a (model, release)'s current window once it holds `min_samples` rows, else its last
complete window, so an alarm does not blink off whenever a window starts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field

from engines.shadow_diff import ShadowDiff
from features.signature import ModelSignature
from health.columns import WatchedColumns, watched_columns
from health.drift import DriftThresholds, HealthReport, ModelHealth, evaluate
from health.offline import OfflineStats, atomic_write
from health.sketches import DEFAULT_K, ModelSketches

_log = logging.getLogger(__name__)

HISTORY_WORKER = "0"
"""The worker that writes `history.jsonl` (the one worker of a single-process gateway should be "0")."""

_WINDOW_FORMAT = "quasar.health.window/1"
_PREVIOUS = ".prev"
_SUFFIX = ".kll"
_LABELS = ("model", "release", "name", "kind")

_T = TypeVar("_T")


class HealthSettings(BaseModel):
    """`sample_rate`: the fraction of model calls observed. `queue_max`: calls waiting for the background
    task; more are dropped (and counted). `state_dir`: where workers share their sketches (None: this
    process only, nothing written). `window_s`: tumbling windows, aligned on multiples of it so that every
    worker agrees on them. `flush_interval_s`: how often sketches are written, merged and evaluated;
    `drain_interval_s`: how often the queue is emptied into the sketches. `k`: KLL's size parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # 0.1: sketching every call cost the demo feed ~13% of its in-process p50 (a thread holding the GIL
    # beside the loop), 10% of calls cost ~1% and still gives thousands of rows a second to every sketch.
    sample_rate: Annotated[float, Field(ge=0, le=1)] = 0.1
    queue_max: Annotated[int, Field(ge=1)] = 256
    state_dir: Path | None = None
    window_s: Annotated[float, Field(gt=0)] = 300.0
    flush_interval_s: Annotated[float, Field(gt=0)] = 10.0
    drain_interval_s: Annotated[float, Field(gt=0)] = 0.1
    thresholds: DriftThresholds = DriftThresholds()
    k: Annotated[int, Field(ge=8, le=65535)] = DEFAULT_K


@dataclass(frozen=True)
class WindowFile:
    """One worker's sketches of one (model, release) and window, as read from the state directory."""

    model: str
    release: str
    worker: str
    window_start_s: float
    mtime_s: float
    sketches: ModelSketches


def health_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "health"


def window_path(state_dir: Path, model: str, release: str, worker: str, *, previous: bool = False) -> Path:
    """The file of `worker`'s sketches of (model, release): the current window's, or the one before's."""
    name = f"{_segment(worker)}{_PREVIOUS if previous else ''}{_SUFFIX}"
    return health_dir(state_dir) / _segment(model) / _segment(release) / name


def read_windows(state_dir: Path) -> list[WindowFile]:
    """Every window file under `state_dir`; unreadable or corrupt ones are skipped with a warning (a
    worker replaces its files atomically, so a reader never sees half of one)."""
    found = []
    for path in sorted(health_dir(state_dir).glob(f"*/*/*{_SUFFIX}")):
        try:
            mtime_s = path.stat().st_mtime
            found.append(_parse_window(path.read_bytes(), mtime_s))
        except (OSError, ValueError) as error:
            _log.warning("health: skipping %s: %s", path, error)
    return found


def merge_window(files: Iterable[WindowFile], model: str, release: str, window_start_s: float) -> ModelSketches | None:
    """The merged sketches of every worker's file of (model, release) and that window (a worker with both
    a current and a previous file of it counts once, by its larger one); None when no file has it. Files of
    other columns (a worker serving another signature) are skipped with a warning."""
    latest: dict[str, WindowFile] = {}
    for file in files:
        if (file.model, file.release, file.window_start_s) != (model, release, window_start_s):
            continue
        if file.worker not in latest or file.sketches.n > latest[file.worker].sketches.n:
            latest[file.worker] = file
    merged: ModelSketches | None = None
    for worker, file in sorted(latest.items()):
        if merged is None:
            merged = file.sketches.empty_like()
        try:
            merged.merge(file.sketches)
        except ValueError as error:
            _log.warning("health: not merging worker %s's %s@%s: %s", worker, model, release, error)
    return merged


@dataclass(frozen=True, slots=True)
class _Call:
    model: str
    release: str
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class _Shadow:
    diff: ShadowDiff


class HealthMonitor:
    """Watches the inputs and outputs of model calls for drift from their release's offline stats.

    `observe` is called on the request path and only queues references (the caller must not mutate the
    tensors afterwards); a background task (`start`/`close`) turns them into sketches and, every
    `flush_interval_s`, calls `flush`. Fail-open by policy: a call whose tensors do not fit its signature,
    an unknown model, an unreadable stats file or a failing write is logged and counted in
    `quasar_health_errors_total`, never raised into serving. `clock` (wall time, seconds), `uniform` (a draw in
    [0, 1) for sampling) and `sleep` (the background task's pause) are injectable for tests.
    """

    def __init__(
        self,
        signatures: Mapping[str, ModelSignature],
        offline: Callable[[str, str], OfflineStats | None],
        settings: HealthSettings,
        registry: CollectorRegistry,
        worker: str,
        *,
        clock: Callable[[], float] = time.time,
        uniform: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        request_entities: Collection[str] = (),
    ) -> None:
        """`request_entities`: the entities keyed by the request, whose features are one value per call
        (see `health.columns.FeatureSpan.per_request`)."""
        self._columns: dict[str, WatchedColumns] = {
            name: watched_columns(s, request_entities) for name, s in signatures.items()
        }
        self._offline = offline
        self._settings = settings
        self._worker = worker
        self._clock = clock
        self._uniform = uniform
        self._sleep = sleep
        self._queue: deque[_Call | _Shadow] = deque()
        self._windows: dict[tuple[str, str], ModelSketches] = {}
        self._window_start_s: float | None = None
        self._stats: dict[tuple[str, str], OfflineStats] = {}
        self._shadow_lines: list[bytes] = []
        self._current = HealthReport(time_s=0.0)
        self._last: HealthReport | None = None
        self._gauged: set[tuple[str, ...]] = set()
        self._healthy_gauged: set[tuple[str, str]] = set()
        self._warned: set[str] = set()
        # held by the thread doing background work: a cancelled flush's thread may still be running when
        # close() flushes again
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        # prometheus_client cannot remove a label set from its multiprocess files (it only warns): there,
        # the series of a release no longer served keep their last value
        self._removable = not ({"PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"} & os.environ.keys())
        # multiprocess_mode (used only under PROMETHEUS_MULTIPROC_DIR): every worker computes the same merged
        # value, so the most recent one written is the value
        self._psi = Gauge(
            "quasar_health_psi",
            "PSI of online vs offline values",
            _LABELS,
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self._ks = Gauge(
            "quasar_health_ks_statistic",
            "KS distance of online vs offline values",
            _LABELS,
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self._alarm = Gauge(
            "quasar_health_alarm",
            "1 when a feature or head drifts from its offline distribution",
            _LABELS,
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self._samples = Gauge(
            "quasar_health_samples",
            "online values of the window compared",
            _LABELS,
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self._healthy = Gauge(
            "quasar_model_healthy",
            "0 when any feature or head of the model drifts in this release",
            ("model", "release"),
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self._dropped = Counter("quasar_health_dropped_total", "observations dropped (queue full)", registry=registry)
        self._errors = Counter(
            "quasar_health_errors_total", "health tracking failures (fail-open)", ("stage",), registry=registry
        )

    # -- the request path ------------------------------------------------------------------------------

    def observe(
        self, model: str, release: str, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
    ) -> None:
        """Queue one model call (a `sample_rate` share of them). O(1); never blocks, never raises: a full
        queue drops the call and counts it in `quasar_health_dropped_total`."""
        if not self._settings.enabled or (
            self._settings.sample_rate < 1.0 and self._uniform() >= self._settings.sample_rate
        ):
            return
        self._enqueue(_Call(model, release, inputs, outputs))

    def observe_shadow(self, diff: ShadowDiff) -> None:
        """Queue one shadow comparison the router made (the `Router(on_diff=...)` sink); the background task
        appends it to `shadow.jsonl` for the report. O(1), never raises."""
        if self._settings.enabled:
            self._enqueue(_Shadow(diff))

    def _enqueue(self, item: _Call | _Shadow) -> None:
        if len(self._queue) >= self._settings.queue_max:
            self._dropped.inc()
            return
        self._queue.append(item)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background task (nothing when disabled or already started)."""
        if self._settings.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"health-monitor-{self._worker}")

    async def close(self) -> None:
        """Stop the background task, then flush once (what is queued is evaluated and written)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if self._settings.enabled:
            await self._guarded(self.flush())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_flush = loop.time() + self._settings.flush_interval_s
        while True:
            await self._sleep(max(0.0, min(self._settings.drain_interval_s, next_flush - loop.time())))
            if loop.time() >= next_flush:
                next_flush = loop.time() + self._settings.flush_interval_s
                await self._guarded(self.flush())
            elif self._queue:
                await self._guarded(self._drain())

    async def _guarded(self, work: Any) -> None:
        try:
            await work
        except Exception:  # fail-open policy: a failing health observer must never stop serving
            _log.exception("health: background work failed")
            self._errors.labels("background").inc()

    # -- the background work ---------------------------------------------------------------------------

    async def _drain(self) -> None:
        await asyncio.to_thread(self._locked, self._drain_sync)

    async def flush(self) -> HealthReport:
        """Drain the queue, write this worker's window, merge every worker's, evaluate it, set the gauges
        and append the history; when the window has ended, first close it (its evaluation becomes
        `last_report()`) and start a new one. Returns the current window's report."""
        return await asyncio.to_thread(self._locked, self._flush_sync)

    def report(self) -> HealthReport:
        """The current window's evaluation as of the last flush."""
        return self._current

    def last_report(self) -> HealthReport | None:
        """The last complete window's evaluation (None before one ends)."""
        return self._last

    def _locked(self, work: Callable[[], _T]) -> _T:
        with self._lock:
            return work()

    def _drain_sync(self) -> None:
        for _ in range(len(self._queue)):
            item = self._queue.popleft()
            if isinstance(item, _Call):
                self._absorb(item)
            else:
                self._summarize(item.diff)

    def _absorb(self, call: _Call) -> None:
        columns = self._columns.get(call.model)
        if columns is None:
            self._fail("columns", f"no signature for model {call.model!r}")
            return
        try:
            values = columns.values(call.inputs, call.outputs)
        except ValueError as error:
            self._fail("columns", f"{call.model}: {error}")
            return
        key = (call.model, call.release)
        if key not in self._windows:
            self._windows[key] = ModelSketches(columns.features, columns.heads, self._settings.k)
        self._windows[key].update(*values, once=columns.per_request)

    def _flush_sync(self) -> HealthReport:
        now = self._clock()
        self._drain_sync()
        window = math.floor(now / self._settings.window_s) * self._settings.window_s
        if self._window_start_s is None:
            self._window_start_s = window
        if window != self._window_start_s:
            self._write_windows(now, previous=True)
            self._last = self._evaluate(now, self._window_start_s)
            self._append_history(self._last, now, final=True)
            # a (model, release) that saw nothing for a whole window is dropped (a release rolled back)
            self._windows = {key: s.empty_like() for key, s in self._windows.items() if s.n > 0}
            self._window_start_s = window
        self._write_windows(now, previous=False)
        self._current = self._evaluate(now, window)
        self._append_history(self._current, now, final=False)
        self._set_gauges()
        self._write_shadow()
        return self._current

    def _write_windows(self, now: float, *, previous: bool) -> None:
        state_dir = self._settings.state_dir
        if state_dir is None:
            return
        for (model, release), sketches in self._windows.items():
            if sketches.n == 0:
                continue
            envelope = {
                "format": _WINDOW_FORMAT,
                "model": model,
                "release": release,
                "worker": self._worker,
                "window_start_s": self._window_start_s,
                "sketches": sketches.to_json(),
            }
            path = window_path(state_dir, model, release, self._worker, previous=previous)
            atomic_write(path, orjson.dumps(envelope), mtime_s=now)

    def _evaluate(self, now: float, window_start_s: float) -> HealthReport:
        state_dir = self._settings.state_dir
        files: list[WindowFile] = []
        if state_dir is not None:
            files = [
                f
                for f in read_windows(state_dir)
                if f.worker != self._worker  # this worker's own sketches are fresher in memory
                and f.window_start_s == window_start_s
                and now - f.mtime_s <= self._settings.window_s
            ]
        keys = {k for k, s in self._windows.items() if s.n > 0} | {(f.model, f.release) for f in files}
        models = []
        for model, release in sorted(keys):
            merged = merge_window(files, model, release, window_start_s)
            local = self._windows.get((model, release))
            if local is not None and local.n > 0:
                merged = self._merged(local, merged, model, release)
            assert merged is not None  # the key came from a local window or a file
            stats = self._offline_stats(model, release)
            drifts = evaluate(stats.sketches, merged, self._settings.thresholds) if stats is not None else []
            models.append(
                ModelHealth(
                    model=model,
                    release=release,
                    samples=merged.n,
                    drifts=tuple(drifts),
                    offline=stats is not None,
                    window_start_s=window_start_s,
                )
            )
        return HealthReport(time_s=now, models=tuple(models))

    def _merged(self, local: ModelSketches, others: ModelSketches | None, model: str, release: str) -> ModelSketches:
        merged = local.empty_like()
        merged.merge(local)
        if others is not None:
            try:
                merged.merge(others)
            except ValueError as error:
                self._fail("merge", f"{model}@{release}: {error}")
        return merged

    def _offline_stats(self, model: str, release: str) -> OfflineStats | None:
        cached = self._stats.get((model, release))
        if cached is not None:
            return cached
        try:
            stats = self._offline(model, release)
        except (OSError, ValueError) as error:
            self._fail("offline", f"offline stats of {model}@{release}: {error}")
            return None
        if stats is None:
            if f"offline:{model}@{release}" not in self._warned:
                self._warned.add(f"offline:{model}@{release}")
                _log.warning("health: release %s has no offline stats for %s: nothing to compare", release, model)
            return None
        self._stats[(model, release)] = stats
        return stats

    def _shown(self) -> list[ModelHealth]:
        """Per (model, release), what the gauges show: the current window once it has `min_samples` rows,
        else the last complete window's evaluation (so alarms do not blink off at each window's start)."""
        last = self._last.by_key() if self._last is not None else {}
        current = self._current.by_key()
        shown = []
        for key in sorted(current.keys() | last.keys()):
            health, previous = current.get(key), last.get(key)
            if health is not None and (previous is None or health.samples >= self._settings.thresholds.min_samples):
                shown.append(health)
            elif previous is not None:
                shown.append(previous)
        return shown

    def _set_gauges(self) -> None:
        gauged: set[tuple[str, ...]] = set()
        healthy: set[tuple[str, str]] = set()
        for health in self._shown():
            self._healthy.labels(health.model, health.release).set(1 if health.healthy else 0)
            healthy.add((health.model, health.release))
            for drift in health.drifts:
                labels = (health.model, health.release, drift.name, drift.kind)
                self._samples.labels(*labels).set(drift.n_online)
                self._psi.labels(*labels).set(drift.psi)
                self._ks.labels(*labels).set(drift.ks_statistic)
                self._alarm.labels(*labels).set(1 if drift.alarm else 0)
                gauged.add(labels)
        if self._removable:
            for stale in self._gauged - gauged:
                for gauge in (self._samples, self._psi, self._ks, self._alarm):
                    gauge.remove(*stale)
            for pair in self._healthy_gauged - healthy:
                self._healthy.remove(*pair)
        self._gauged, self._healthy_gauged = gauged, healthy

    def _append_history(self, report: HealthReport, now: float, *, final: bool) -> None:
        state_dir = self._settings.state_dir
        if state_dir is None or self._worker != HISTORY_WORKER:
            return
        lines = [
            orjson.dumps(
                {
                    "time_s": now,
                    "window_start_s": health.window_start_s,
                    "final": final,
                    "model": health.model,
                    "release": health.release,
                    "name": drift.name,
                    "kind": drift.kind,
                    "psi": drift.psi,
                    "ks": drift.ks_statistic,
                    "n": drift.n_online,
                    "sufficient": drift.sufficient,
                    "alarm": drift.alarm,
                }
            )
            for health in report.models
            for drift in health.drifts
        ]
        _append(health_dir(state_dir) / "history.jsonl", lines)

    def _summarize(self, diff: ShadowDiff) -> None:
        if self._settings.state_dir is not None:
            self._shadow_lines.append(orjson.dumps({"time_s": self._clock(), **shadow_record(diff)}))

    def _write_shadow(self) -> None:
        lines, self._shadow_lines = self._shadow_lines, []
        if self._settings.state_dir is not None:
            _append(health_dir(self._settings.state_dir) / "shadow.jsonl", lines)

    def _fail(self, stage: str, message: str) -> None:
        self._errors.labels(stage).inc()
        if message not in self._warned:  # each distinct problem is logged once; the counter counts them all
            self._warned.add(message)
            _log.warning("health: %s", message)


def shadow_record(diff: ShadowDiff) -> dict[str, Any]:
    """A shadow comparison (computed by the router, `engines.shadow_diff`) as a `shadow.jsonl` record."""
    return {
        "model": diff.model,
        "target": diff.target,
        "primary": diff.primary,
        "rows": diff.rows,
        "heads": {
            head: {
                "mean_abs_delta": h.mean_abs_delta,
                "max_abs_delta": h.max_abs_delta,
                "topk_overlap": h.topk_overlap,
                "kendall_tau": h.kendall_tau,
            }
            for head, h in diff.heads.items()
        },
    }


def _append(path: Path, lines: list[bytes]) -> None:
    """Append lines in one `write` on an O_APPEND descriptor, so concurrent writers never interleave them."""
    if not lines:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"".join(line + b"\n" for line in lines))
    finally:
        os.close(fd)


def _segment(name: str) -> str:
    """`name` as one safe path segment (no separators, never '.', '..' or empty)."""
    encoded = quote(name, safe="")
    if not encoded:
        return "%00"
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def _parse_window(data: bytes, mtime_s: float) -> WindowFile:
    try:
        envelope = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(envelope, dict) or envelope.get("format") != _WINDOW_FORMAT:
        raise ValueError(f"not a window file (expected format {_WINDOW_FORMAT!r})")
    try:
        return WindowFile(
            model=str(envelope["model"]),
            release=str(envelope["release"]),
            worker=str(envelope["worker"]),
            window_start_s=float(envelope["window_start_s"]),
            mtime_s=mtime_s,
            sketches=ModelSketches.from_json(envelope["sketches"]),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"incomplete window file: {error!r}") from None
