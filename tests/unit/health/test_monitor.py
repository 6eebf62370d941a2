from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from health import DriftThresholds, HealthMonitor, HealthReport, HealthSettings, OfflineStats, offline_stats
from health.monitor import read_windows, window_path
from tests.unit.health.model import call, shadow_diff, signature

WINDOW_S = 300.0
START_S = 1_700_000_200.0  # 100 s into a window (windows start at multiples of WINDOW_S)


class FakeClock:
    def __init__(self, now: float = START_S) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def stats() -> OfflineStats:
    inputs, outputs = call(np.random.default_rng(0), 20_000)
    return offline_stats(signature(), inputs, outputs, k=1000)


def _monitor(
    stats: OfflineStats | None,
    *,
    worker: str = "0",
    state_dir: Path | None = None,
    clock: FakeClock | None = None,
    registry: CollectorRegistry | None = None,
    uniform: Callable[[], float] = lambda: 0.0,
    **settings: object,
) -> tuple[HealthMonitor, CollectorRegistry]:
    registry = registry or CollectorRegistry()
    monitor = HealthMonitor(
        {"ranker": signature()},
        lambda model, release: stats if (model, release) == ("ranker", "r1") else None,
        HealthSettings.model_validate(
            {"state_dir": state_dir, "window_s": WINDOW_S, "k": 1000, **settings},
        ),
        registry,
        worker,
        clock=clock or FakeClock(),
        uniform=uniform,
    )
    return monitor, registry


def _observe(monitor: HealthMonitor, seed: int, calls: int, rows: int = 500, shift: float = 0.0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(calls):
        monitor.observe("ranker", "r1", *call(rng, rows, shift=shift))


def _gauge(registry: CollectorRegistry, metric: str, name: str, kind: str, release: str = "r1") -> float | None:
    labels = {"model": "ranker", "release": release, "name": name, "kind": kind}
    return registry.get_sample_value(metric, labels)


def _samples(report: HealthReport) -> int:
    health = report.get("ranker", "r1")
    assert health is not None
    return health.samples


def _healthy(registry: CollectorRegistry, release: str = "r1") -> float | None:
    return registry.get_sample_value("quasar_model_healthy", {"model": "ranker", "release": release})


async def test_a_drifting_release_raises_its_alarms_and_gauges(stats: OfflineStats) -> None:
    monitor, registry = _monitor(stats)
    _observe(monitor, seed=1, calls=10, shift=1.0)  # member_profile.activity and click move by 1 sigma
    report = await monitor.flush()
    health = report.get("ranker", "r1")
    assert health is not None
    assert health.samples == 5000
    assert health.offline
    assert not health.healthy
    assert not report.healthy
    assert {d.name for d in health.drifts if d.alarm} == {"member_profile.activity", "click"}
    assert _healthy(registry) == 0
    assert _gauge(registry, "quasar_health_alarm", "click", "head") == 1
    assert _gauge(registry, "quasar_health_alarm", "share", "head") == 0
    assert _gauge(registry, "quasar_health_alarm", "member_profile.vector", "feature") == 0
    assert _gauge(registry, "quasar_health_samples", "click", "head") == 5000
    psi = _gauge(registry, "quasar_health_psi", "member_profile.activity", "feature")
    ks = _gauge(registry, "quasar_health_ks_statistic", "member_profile.activity", "feature")
    assert psi is not None
    assert psi > 0.2
    assert ks is not None
    assert ks == pytest.approx(0.38, abs=0.05)
    assert monitor.report() is report


@pytest.mark.parametrize(
    ("shift", "alarmed"),
    [({"feature_shift": 0.1}, {"member_profile.activity"}), ({"head_shift": 0.1}, {"click"}), ({}, set())],
)
async def test_a_tenth_of_a_sigma_in_generated_traffic_raises_that_names_alarm_and_no_other(
    shift: dict[str, float], alarmed: set[str]
) -> None:
    """Through the monitor as the gateway drives it (observe, flush, gauges): 50k rows of traffic against
    200k rows of training data, sketches large enough to see a 0.1 sigma move (see test_drift.py)."""
    inputs, outputs = call(np.random.default_rng(0), 200_000)
    k = 8000
    monitor, registry = _monitor(offline_stats(signature(), inputs, outputs, k=k), k=k, queue_max=1000)
    rng = np.random.default_rng(7)
    for _ in range(100):
        monitor.observe("ranker", "r1", *call(rng, 500, **shift))
    report = await monitor.flush()
    health = report.get("ranker", "r1")
    assert health is not None
    assert health.samples == 50_000
    assert {d.name for d in health.drifts if d.alarm} == alarmed
    assert _healthy(registry) == (0 if alarmed else 1)
    for drift in health.drifts:
        assert _gauge(registry, "quasar_health_alarm", drift.name, drift.kind) == (1 if drift.name in alarmed else 0)


async def test_a_release_like_its_training_data_is_healthy(stats: OfflineStats) -> None:
    monitor, registry = _monitor(stats)
    _observe(monitor, seed=2, calls=10)
    report = await monitor.flush()
    assert report.healthy
    assert _healthy(registry) == 1
    assert _gauge(registry, "quasar_health_alarm", "member_profile.activity", "feature") == 0


async def test_without_offline_stats_nothing_is_compared(stats: OfflineStats) -> None:
    monitor, registry = _monitor(None)
    _observe(monitor, seed=3, calls=3, shift=5.0)
    health = (await monitor.flush()).get("ranker", "r1")
    assert health is not None
    assert health.samples == 1500
    assert not health.offline
    assert health.drifts == ()
    assert health.healthy
    assert _healthy(registry) == 1
    assert _gauge(registry, "quasar_health_alarm", "click", "head") is None


async def test_sampling_observes_the_configured_share(stats: OfflineStats) -> None:
    draws = iter([0.1, 0.6, 0.3, 0.9])
    monitor, _ = _monitor(stats, uniform=lambda: next(draws), sample_rate=0.5)
    _observe(monitor, seed=4, calls=4, rows=10)
    health = (await monitor.flush()).get("ranker", "r1")
    assert health is not None
    assert health.samples == 20


async def test_a_full_queue_drops_and_counts_without_raising(stats: OfflineStats) -> None:
    monitor, registry = _monitor(stats, queue_max=3)
    _observe(monitor, seed=5, calls=8, rows=10)
    monitor.observe_shadow(shadow_diff({"click": np.zeros(3)}, {"click": np.ones(3)}))
    assert registry.get_sample_value("quasar_health_dropped_total") == 6
    health = (await monitor.flush()).get("ranker", "r1")
    assert health is not None
    assert health.samples == 30
    _observe(monitor, seed=6, calls=1, rows=10)  # drained: room again
    assert registry.get_sample_value("quasar_health_dropped_total") == 6


async def test_calls_that_do_not_fit_are_counted_not_raised(stats: OfflineStats) -> None:
    monitor, registry = _monitor(stats)
    inputs, outputs = call(np.random.default_rng(7), 10)
    monitor.observe("unknown_model", "r1", inputs, outputs)
    monitor.observe("ranker", "r1", {"features": inputs["features"]}, outputs)
    monitor.observe("ranker", "r1", inputs, outputs)
    health = (await monitor.flush()).get("ranker", "r1")
    assert health is not None
    assert health.samples == 10
    assert registry.get_sample_value("quasar_health_errors_total", {"stage": "columns"}) == 2


async def test_workers_sharing_a_state_dir_evaluate_the_merged_window(tmp_path: Path, stats: OfflineStats) -> None:
    clock = FakeClock()
    first, first_registry = _monitor(stats, worker="0", state_dir=tmp_path, clock=clock)
    second, second_registry = _monitor(stats, worker="1", state_dir=tmp_path, clock=clock)
    _observe(first, seed=8, calls=4)
    _observe(second, seed=9, calls=6)
    assert _samples(await second.flush()) == 3000
    merged = (await first.flush()).get("ranker", "r1")
    assert merged is not None
    assert merged.samples == 5000
    assert _gauge(first_registry, "quasar_health_samples", "click", "head") == 5000
    again = (await second.flush()).get("ranker", "r1")
    assert again is not None
    assert again.samples == 5000
    assert _gauge(second_registry, "quasar_health_samples", "click", "head") == 5000
    assert sorted(p.name for p in window_path(tmp_path, "ranker", "r1", "0").parent.iterdir()) == ["0.kll", "1.kll"]
    # only worker 0 writes the history: one line per name and evaluation
    history = [orjson.loads(line) for line in (tmp_path / "health" / "history.jsonl").read_bytes().splitlines()]
    assert len(history) == 8
    assert {(h["name"], h["n"]) for h in history} >= {("click", 5000), ("member_profile.activity", 5000)}
    assert all(h["model"] == "ranker" and h["release"] == "r1" and not h["alarm"] for h in history)


async def test_a_file_of_another_window_or_too_old_is_not_merged(tmp_path: Path, stats: OfflineStats) -> None:
    clock = FakeClock()
    old, _ = _monitor(stats, worker="1", state_dir=tmp_path, clock=clock)
    _observe(old, seed=10, calls=2)
    await old.flush()  # worker 1 writes its window, then dies
    clock.now += WINDOW_S
    stale, _ = _monitor(stats, worker="2", state_dir=tmp_path, clock=clock)
    _observe(stale, seed=11, calls=1)
    await stale.flush()  # worker 2 writes in the current window, but its file is then found too old
    stale_file = window_path(tmp_path, "ranker", "r1", "2")
    os.utime(stale_file, (clock.now - WINDOW_S - 1, clock.now - WINDOW_S - 1))
    current, _ = _monitor(stats, worker="0", state_dir=tmp_path, clock=clock)
    _observe(current, seed=12, calls=3)
    assert _samples(await current.flush()) == 1500
    windows = {f.worker: f.window_start_s for f in read_windows(tmp_path)}
    assert windows == {"0": START_S + WINDOW_S - 100, "1": START_S - 100, "2": START_S + WINDOW_S - 100}
    os.utime(stale_file, (clock.now, clock.now))
    assert _samples(await current.flush()) == 2000


async def test_windows_tumble_and_the_last_complete_one_stays(tmp_path: Path, stats: OfflineStats) -> None:
    clock = FakeClock()
    monitor, registry = _monitor(stats, state_dir=tmp_path, clock=clock)
    _observe(monitor, seed=21, calls=4, shift=1.0)
    await monitor.flush()
    assert monitor.last_report() is None
    clock.now += WINDOW_S  # the window ends
    _observe(monitor, seed=13, calls=1, rows=100)  # drained before the flush: counted in the ending window
    current = await monitor.flush()
    last = monitor.last_report()
    assert last is not None
    assert _samples(last) == 2100
    assert not last.healthy
    assert current.models == ()  # the new window has seen nothing yet
    assert _healthy(registry) == 0  # gauges keep the last complete window until the new one has enough
    assert (tmp_path / "health" / "ranker" / "r1" / "0.prev.kll").exists()
    _observe(monitor, seed=14, calls=4)  # the new window: like training
    clock.now += 10
    fresh = (await monitor.flush()).get("ranker", "r1")
    assert fresh is not None
    assert fresh.samples == 2000
    assert fresh.healthy
    assert _healthy(registry) == 1
    assert _gauge(registry, "quasar_health_samples", "click", "head") == 2000


async def test_a_new_window_below_min_samples_shows_the_last_one(stats: OfflineStats) -> None:
    clock = FakeClock()
    monitor, registry = _monitor(stats, clock=clock, thresholds=DriftThresholds(min_samples=1000))
    _observe(monitor, seed=15, calls=4, shift=1.0)
    await monitor.flush()
    clock.now += WINDOW_S
    await monitor.flush()
    _observe(monitor, seed=16, calls=1, rows=999)
    current = (await monitor.flush()).get("ranker", "r1")
    assert current is not None
    assert current.samples == 999
    assert current.healthy
    assert _healthy(registry) == 0
    assert _gauge(registry, "quasar_health_samples", "click", "head") == 2000


async def test_shadow_diffs_are_summarized_into_shadow_jsonl(tmp_path: Path, stats: OfflineStats) -> None:
    monitor, _ = _monitor(stats, worker="3", state_dir=tmp_path)
    primary = np.array([0.9, 0.8, 0.7, 0.1, 0.0])
    monitor.observe_shadow(
        shadow_diff({"click": primary, "share": primary}, {"click": primary + 0.5, "share": primary[::-1].copy()}, 2)
    )
    await monitor.flush()
    (line,) = (tmp_path / "health" / "shadow.jsonl").read_bytes().splitlines()
    summary = orjson.loads(line)
    assert (summary["model"], summary["target"], summary["rows"], summary["time_s"]) == (
        "ranker",
        "v2",
        5,
        START_S,
    )
    assert summary["heads"]["click"] == {
        "mean_abs_delta": pytest.approx(0.5),
        "max_abs_delta": pytest.approx(0.5),
        "topk_overlap": 1.0,
        "kendall_tau": pytest.approx(1.0),
    }
    assert summary["heads"]["share"]["topk_overlap"] == 0.0
    assert summary["heads"]["share"]["kendall_tau"] == pytest.approx(-1.0)
    assert not (tmp_path / "health" / "history.jsonl").exists()  # worker 3 writes no history


async def test_start_and_close_run_the_background_task_and_flush_once(stats: OfflineStats) -> None:
    monitor, registry = _monitor(stats, flush_interval_s=3600.0, drain_interval_s=3600.0)
    await monitor.start()
    _observe(monitor, seed=17, calls=2, rows=100)
    await monitor.close()
    health = monitor.report().get("ranker", "r1")
    assert health is not None
    assert health.samples == 200
    assert _gauge(registry, "quasar_health_samples", "click", "head") == 200
    await monitor.close()  # closing again is harmless


class Ticks:
    """A `sleep` for the background task that does not wait: it counts its calls and wakes a waiter."""

    def __init__(self) -> None:
        self.calls = 0
        self.called = asyncio.Event()

    async def __call__(self, delay_s: float) -> None:
        self.calls += 1
        self.called.set()
        await asyncio.sleep(0)  # a turn of the loop, no time


async def test_the_background_task_drains_and_flushes_on_its_own(stats: OfflineStats) -> None:
    ticks = Ticks()
    registry = CollectorRegistry()
    monitor = HealthMonitor(
        {"ranker": signature()},
        lambda model, release: stats,
        HealthSettings(flush_interval_s=1e-9, k=1000, sample_rate=1.0),  # due at every turn
        registry,
        "0",
        clock=FakeClock(),
        sleep=ticks,
    )
    await monitor.start()
    _observe(monitor, seed=18, calls=1, rows=100)
    while _gauge(registry, "quasar_health_samples", "click", "head") != 100:
        ticks.called.clear()
        await asyncio.wait_for(ticks.called.wait(), timeout=30)  # the next turn of the background task
    await monitor.close()
    assert ticks.calls >= 1  # the background task paused through the injected sleep, never the clock


async def test_a_disabled_monitor_observes_nothing(stats: OfflineStats) -> None:
    monitor, registry = _monitor(stats, enabled=False)
    await monitor.start()
    _observe(monitor, seed=19, calls=2)
    await monitor.close()
    assert monitor.report().models == ()
    assert registry.get_sample_value("quasar_health_dropped_total") == 0


async def test_a_release_unseen_for_a_whole_window_leaves_the_gauges(
    stats: OfflineStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another test's import (feast) may have set it for the session: series are then kept, not removed.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    clock = FakeClock()
    monitor, registry = _monitor(stats, clock=clock)
    _observe(monitor, seed=22, calls=3)
    await monitor.flush()
    clock.now += WINDOW_S
    await monitor.flush()
    assert _healthy(registry) == 1  # the window that saw it is the last complete one
    clock.now += WINDOW_S
    await monitor.flush()
    assert _healthy(registry) is None
    assert _gauge(registry, "quasar_health_samples", "click", "head") is None


async def test_under_multiprocess_prometheus_series_are_kept_not_removed(
    stats: OfflineStats, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    clock = FakeClock()
    monitor, _ = _monitor(stats, clock=clock)
    _observe(monitor, seed=23, calls=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # prometheus_client warns when asked to remove a series there
        for _ in range(3):
            await monitor.flush()
            clock.now += WINDOW_S


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError):
        HealthSettings(sample_rate=1.5)
    with pytest.raises(ValidationError):
        HealthSettings.model_validate({"window": 60})
    assert HealthSettings().thresholds == DriftThresholds()
