"""Request capture: a sampled share of served requests written to disk for replay (`quasar replay`).

The request path pays one random draw and, for a sampled request, one non-blocking enqueue of references
(the finished context and the feed). A writer thread serialises (`gateway.capture_record`, orjson) and
appends one JSON line per request to `capture-<worker>-<UTC timestamp>-<seq>.jsonl` files in `dir`,
rotating beyond `max_file_bytes` and deleting this worker's oldest files beyond `max_total_bytes`.
"""

from __future__ import annotations

import logging
import queue
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.capture_record import capture_record
from gateway.rate_limited_log import RateLimitedLog
from remix.context import Context
from remix.steps.candidates import Candidates

log = logging.getLogger(__name__)

_WORKER = re.compile(r"^[A-Za-z0-9_.]+$")


class CaptureSettings(BaseModel):
    """`rate`: the share of requests captured (0: capture is off). `max_file_bytes`: a file is rotated
    before it would grow beyond this (a single larger record gets a file of its own). `max_total_bytes`:
    the disk budget of one worker's files; its oldest files are deleted beyond it. `queue_max`: requests
    waiting for the writer thread; beyond it new ones are dropped (and counted), never waited for. A queued
    request holds its context, model tensors included (about 0.4 MB for a 600-candidate feed), until written.
    The writer thread's serialisation holds the GIL (orjson, base64): at rate 1 it competes with the event
    loop; sample a share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(0.0, ge=0.0, le=1.0)
    dir: Path = Path("var/capture")
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_total_bytes: int = Field(1024 * 1024 * 1024, ge=1024)
    queue_max: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _budget_holds_a_file(self) -> CaptureSettings:
        if self.max_total_bytes < self.max_file_bytes:
            raise ValueError(
                f"max_total_bytes ({self.max_total_bytes}) is below max_file_bytes ({self.max_file_bytes}): "
                "the budget must hold at least one full file"
            )
        return self


class CaptureMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.captured = Counter(
            "quasar_capture_captured_total", "Requests written to capture files.", registry=registry
        )
        self.bytes = Counter("quasar_capture_bytes_total", "Bytes written to capture files.", registry=registry)
        self.dropped = Counter(
            "quasar_capture_dropped_total",
            "Sampled requests not captured: queue_full (the writer fell behind), closed, error.",
            ("reason",),
            registry=registry,
        )
        self.deleted = Counter(
            "quasar_capture_files_deleted_total",
            "Capture files deleted to keep within the disk budget.",
            registry=registry,
        )


@dataclass(frozen=True)
class _Pending:
    ctx: Context
    feed: Candidates
    workflow_version: str
    time_s: float


@dataclass(frozen=True)
class _Flush:
    done: threading.Event


_STOP = object()


class CaptureWriter:
    """Captures a sampled share of requests; see the module doc.

    `offer` is called on the request path, after the answer is known; it never blocks, never raises (a
    full queue or a closed writer drops the request and counts it in `quasar_capture_dropped_total`).
    `start()` opens the directory and starts the writer thread; `close()` writes what is queued, then
    stops it (blocking: from async code, run it in a thread). `worker` names this process's files
    (letters, digits, `_` and `.`). `rng` and `clock` (epoch seconds) are injectable for tests.
    """

    def __init__(
        self,
        settings: CaptureSettings,
        registry: CollectorRegistry,
        worker: str,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _WORKER.match(worker):
            raise ValueError(f"worker name {worker!r} must be letters, digits, '_' or '.'")
        self.settings = settings
        self.worker = worker
        self.metrics = CaptureMetrics(registry)
        self._rng = rng or random.Random()  # sampling, not security
        self._clock = clock
        self._queue: queue.Queue[object] = queue.Queue(maxsize=settings.queue_max)
        self._thread: threading.Thread | None = None
        self._closed = False
        # Owned by the writer thread once started.
        self._files: deque[tuple[Path, int]] = deque()  # this worker's files, oldest first, with sizes
        self._current: IO[bytes] | None = None
        self._current_bytes = 0
        self._seq = 0
        self._errors = RateLimitedLog(log)  # a full disk fails every record: one line per interval

    @property
    def files(self) -> list[Path]:
        """This worker's capture files on disk, oldest first (for tests and tools; not thread-safe while
        the writer runs)."""
        return [path for path, _ in self._files]

    def offer(self, ctx: Context, feed: Candidates, workflow_version: str) -> None:
        """Sample the finished request and, when sampled, enqueue it for the writer thread."""
        rate = self.settings.rate
        if rate <= 0.0 or self._rng.random() >= rate:
            return
        if self._closed:
            self.metrics.dropped.labels("closed").inc()
            return
        try:
            self._queue.put_nowait(_Pending(ctx, feed, workflow_version, self._clock()))
        except queue.Full:
            self.metrics.dropped.labels("queue_full").inc()

    def start(self) -> None:
        """Create the directory, adopt this worker's files already there (their bytes count against the
        budget, oldest deleted first), and start the writer thread."""
        if self._thread is not None:
            raise RuntimeError("capture writer already started")
        directory = self.settings.dir
        directory.mkdir(parents=True, exist_ok=True)
        existing = sorted(
            ((seq, path) for path in directory.glob(f"capture-{self.worker}-*.jsonl") if (seq := _seq_of(path)) >= 0),
        )
        self._files.extend((path, path.stat().st_size) for _, path in existing)
        self._seq = existing[-1][0] + 1 if existing else 0
        self._thread = threading.Thread(target=self._run, name=f"quasar-capture-{self.worker}", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Block until everything offered before this call is written and flushed to the file; False when
        `timeout_s` passed first. RuntimeError when the writer is not running."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("capture writer is not running")
        done = threading.Event()
        try:
            self._queue.put(_Flush(done), timeout=timeout_s)
        except queue.Full:
            return False
        return done.wait(timeout_s)

    def close(self) -> None:
        """Write what is queued, close the file, stop the thread. Idempotent; later offers are dropped."""
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join()
            return
        while True:  # never started: nothing will write what was offered
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
            self.metrics.dropped.labels("closed").inc()

    # -- the writer thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                if isinstance(item, _Flush):
                    if self._current is not None:
                        self._current.flush()
                    item.done.set()
                elif isinstance(item, _Pending):
                    self._write(item)
                    if self._queue.empty() and self._current is not None:
                        self._current.flush()  # idle: make what is written visible to readers
        finally:
            if self._current is not None:
                self._current.close()
                self._current = None

    def _write(self, pending: _Pending) -> None:
        try:
            record = capture_record(pending.ctx, pending.feed, pending.workflow_version, time_s=pending.time_s)
            line = orjson.dumps(record) + b"\n"
            self._append(line)
        except Exception as error:  # the writer must outlive a bad record or a full disk; the error is logged
            kind = type(error).__name__
            self._errors.error(kind, f"capture: request not written: {kind}: {error}", exc_info=error)
            self.metrics.dropped.labels("error").inc()
            return
        self.metrics.captured.inc()
        self.metrics.bytes.inc(len(line))

    def _append(self, line: bytes) -> None:
        full = self._current_bytes > 0 and self._current_bytes + len(line) > self.settings.max_file_bytes
        if self._current is not None and full:
            self._current.close()
            self._current = None
        if self._current is None:
            self._open()
        assert self._current is not None
        self._current.write(line)
        self._current_bytes += len(line)
        path, _ = self._files[-1]
        self._files[-1] = (path, self._current_bytes)
        self._enforce_budget()

    def _open(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        path = self.settings.dir / f"capture-{self.worker}-{stamp}-{self._seq:06d}.jsonl"
        self._seq += 1
        self._current = path.open("xb")
        self._current_bytes = 0
        self._files.append((path, 0))

    def _enforce_budget(self) -> None:
        total = sum(size for _, size in self._files)
        while total > self.settings.max_total_bytes and len(self._files) > 1:
            path, size = self._files.popleft()
            path.unlink(missing_ok=True)
            total -= size
            self.metrics.deleted.inc()


def _seq_of(path: Path) -> int:
    """The sequence number of a capture file's name ('capture-<worker>-<stamp>-<seq>.jsonl'), -1 if none."""
    tail = path.stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1
