"""The capture writer: sampling on the request path, a writer thread, rotation, a disk budget, drops."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from gateway.capture import CaptureSettings, CaptureWriter
from gateway.capture_record import read_captures
from remix.context import ModelUse
from tests.unit.gateway.test_capture_record import make_context

NOW_S = 1_780_000_000.0


def writer(tmp_path: Path, **settings: object) -> tuple[CaptureWriter, CollectorRegistry]:
    registry = CollectorRegistry()
    values: dict[str, object] = {"rate": 1.0, "dir": tmp_path / "capture"}
    values.update(settings)
    return CaptureWriter(CaptureSettings(**values), registry, "w0", rng=random.Random(7), clock=lambda: NOW_S), registry


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[CaptureWriter, CollectorRegistry]]:
    capture, registry = writer(tmp_path)
    capture.start()
    yield capture, registry
    capture.close()


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def offer(capture: CaptureWriter, request_id: str) -> None:
    ctx, feed = make_context(request_id=request_id)
    capture.offer(ctx, feed, "2026.12.1")


def test_rate_zero_captures_nothing(tmp_path: Path) -> None:
    capture, registry = writer(tmp_path, rate=0.0)
    capture.start()
    for i in range(20):
        offer(capture, f"r{i}")
    assert capture.flush(timeout_s=10.0)
    capture.close()
    assert list((tmp_path / "capture").iterdir()) == []
    assert metric(registry, "quasar_capture_captured_total") == 0.0


def test_rate_one_captures_every_request_in_order(started: tuple[CaptureWriter, CollectorRegistry]) -> None:
    capture, registry = started
    for i in range(20):
        offer(capture, f"r{i}")
    assert capture.flush(timeout_s=10.0)
    captured = list(read_captures(capture.files))
    assert [c.request_id for c in captured] == [f"r{i}" for i in range(20)]
    assert all(c.time_s == NOW_S for c in captured)
    assert metric(registry, "quasar_capture_captured_total") == 20.0
    assert metric(registry, "quasar_capture_bytes_total") == sum(p.stat().st_size for p in capture.files)
    (name,) = [p.name for p in capture.files]
    assert name == "capture-w0-20260528T202640Z-000000.jsonl"


def test_a_rate_captures_the_requests_its_draws_pick(tmp_path: Path) -> None:
    capture, _ = writer(tmp_path, rate=0.3)
    capture.start()
    for i in range(200):
        offer(capture, f"r{i}")
    assert capture.flush(timeout_s=10.0)
    draws = random.Random(7)
    expected = [f"r{i}" for i in range(200) if draws.random() < 0.3]
    assert [c.request_id for c in read_captures(capture.files)] == expected
    assert 30 < len(expected) < 90
    capture.close()


def test_files_rotate_beyond_max_file_bytes(tmp_path: Path) -> None:
    capture, _ = writer(tmp_path, max_file_bytes=8 * 1024, max_total_bytes=1024 * 1024)
    capture.start()
    for i in range(12):
        offer(capture, f"r{i}")
    capture.close()
    files = capture.files
    sizes = [p.stat().st_size for p in files]
    assert len(files) > 2
    assert all(size <= 8 * 1024 for size in sizes)
    assert [p.name.rsplit("-", 1)[1] for p in files] == [f"{i:06d}.jsonl" for i in range(len(files))]
    assert [c.request_id for c in read_captures(files)] == [f"r{i}" for i in range(12)]


def test_the_disk_budget_deletes_the_oldest_files(tmp_path: Path) -> None:
    capture, registry = writer(tmp_path, max_file_bytes=4 * 1024, max_total_bytes=12 * 1024)
    capture.start()
    for i in range(30):
        offer(capture, f"r{i}")
    capture.close()
    on_disk = sorted((tmp_path / "capture").iterdir())
    assert on_disk == capture.files
    assert sum(p.stat().st_size for p in on_disk) <= 12 * 1024
    kept = [c.request_id for c in read_captures(on_disk)]
    assert kept == [f"r{i}" for i in range(30 - len(kept), 30)]  # the newest, none missing in between
    assert metric(registry, "quasar_capture_files_deleted_total") > 0
    assert metric(registry, "quasar_capture_captured_total") == 30.0


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    capture, registry = writer(tmp_path, queue_max=2)
    for i in range(5):  # the writer thread is not running: nothing drains the queue
        offer(capture, f"r{i}")
    assert metric(registry, "quasar_capture_dropped_total", reason="queue_full") == 3.0
    capture.start()
    assert capture.flush(timeout_s=10.0)
    assert [c.request_id for c in read_captures(capture.files)] == ["r0", "r1"]
    capture.close()


def test_close_writes_what_is_queued_and_later_offers_are_dropped(tmp_path: Path) -> None:
    capture, registry = writer(tmp_path)
    for i in range(4):
        offer(capture, f"r{i}")
    capture.start()
    capture.close()
    assert [c.request_id for c in read_captures(capture.files)] == ["r0", "r1", "r2", "r3"]
    offer(capture, "late")
    assert metric(registry, "quasar_capture_dropped_total", reason="closed") == 1.0
    capture.close()  # idempotent


def test_a_record_that_cannot_be_written_is_counted_and_the_writer_goes_on(
    started: tuple[CaptureWriter, CollectorRegistry],
) -> None:
    capture, registry = started
    ctx, feed = make_context(request_id="bad")
    ctx.models.append(ModelUse("m", "e/m", "1", inputs={"text": np.array(["a"], dtype=object)}))
    capture.offer(ctx, feed, "v")
    offer(capture, "good")
    assert capture.flush(timeout_s=10.0)
    assert metric(registry, "quasar_capture_dropped_total", reason="error") == 1.0
    assert [c.request_id for c in read_captures(capture.files)] == ["good"]


def test_a_restarted_worker_continues_its_sequence_and_budget(tmp_path: Path) -> None:
    first, _ = writer(tmp_path, max_file_bytes=4 * 1024, max_total_bytes=12 * 1024)
    first.start()
    offer(first, "old")
    first.close()
    second, _ = writer(tmp_path, max_file_bytes=4 * 1024, max_total_bytes=12 * 1024)
    second.start()
    offer(second, "new")
    second.close()
    assert [p.name.rsplit("-", 1)[1] for p in second.files] == ["000000.jsonl", "000001.jsonl"]
    assert [c.request_id for c in read_captures([tmp_path / "capture"])] == ["old", "new"]


def test_flush_needs_a_running_writer(tmp_path: Path) -> None:
    capture, _ = writer(tmp_path)
    with pytest.raises(RuntimeError, match="not running"):
        capture.flush()


def test_settings_are_validated() -> None:
    assert CaptureSettings().rate == 0.0
    with pytest.raises(ValidationError, match="rate"):
        CaptureSettings(rate=1.5)
    with pytest.raises(ValidationError, match="max_total_bytes"):
        CaptureSettings(max_file_bytes=1 << 20, max_total_bytes=1 << 19)
    with pytest.raises(ValidationError, match="extra"):
        CaptureSettings(rat=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="worker name"):
        CaptureWriter(CaptureSettings(), CollectorRegistry(), "a/b")
