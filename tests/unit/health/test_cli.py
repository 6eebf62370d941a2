from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from health import (
    HealthMonitor,
    HealthSettings,
    offline_stats,
    offline_stats_path,
    release_stats_loader,
    save_offline_stats,
)
from quasar.cli_health import health
from tests.unit.health.model import call, shadow_diff, signature


async def _serve(state_dir: Path, releases_dir: Path, *, shift: float, shadow: bool = False) -> None:
    """Write a gateway's health state the way the gateway does: offline stats of release r1, then two
    flushes of a monitor observing 4,000 rows (`shift` moves member_profile.activity and click)."""
    inputs, outputs = call(np.random.default_rng(0), 20_000)
    save_offline_stats(offline_stats_path(releases_dir, "r1"), [offline_stats(signature(), inputs, outputs, k=1000)])
    clock = [1_700_000_200.0]
    monitor = HealthMonitor(
        {"ranker": signature()},
        release_stats_loader(releases_dir),
        HealthSettings(state_dir=state_dir, k=1000, sample_rate=1.0),
        CollectorRegistry(),
        "0",
        clock=lambda: clock[0],
    )
    rng = np.random.default_rng(1)
    for _ in range(2):
        for _ in range(4):
            monitor.observe("ranker", "r1", *call(rng, 500, shift=shift))
        if shadow:
            scores = rng.standard_normal(50)
            monitor.observe_shadow(shadow_diff({"click": scores}, {"click": scores + 0.1}))
        await monitor.flush()
        clock[0] += 10


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(health, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


async def test_check_exits_0_when_healthy(tmp_path: Path) -> None:
    await _serve(tmp_path / "state", tmp_path / "releases", shift=0.0)
    code, output = _run("check", "--state-dir", tmp_path / "state", "--releases-dir", tmp_path / "releases")
    assert code == 0, output
    assert "member_profile.activity" in output
    assert "click" in output
    assert "4,000" in output
    assert "alarm" not in output
    assert "healthy" in output


async def test_check_exits_1_and_names_the_unhealthy_release(tmp_path: Path) -> None:
    await _serve(tmp_path / "state", tmp_path / "releases", shift=1.0)
    code, output = _run("check", "--state-dir", tmp_path / "state", "--releases-dir", tmp_path / "releases")
    assert code == 1, output
    assert "unhealthy: ranker@r1" in output
    assert output.count("alarm") == 2  # member_profile.activity and click


async def test_check_thresholds_are_options(tmp_path: Path) -> None:
    await _serve(tmp_path / "state", tmp_path / "releases", shift=1.0)
    state, releases = tmp_path / "state", tmp_path / "releases"
    code, output = _run("check", "--state-dir", state, "--releases-dir", releases, "--min-samples", "5000")
    assert code == 0, output
    assert "insufficient data" in output


async def test_check_without_offline_stats_says_so(tmp_path: Path) -> None:
    await _serve(tmp_path / "state", tmp_path / "releases", shift=1.0)
    code, output = _run("check", "--state-dir", tmp_path / "state", "--releases-dir", tmp_path / "elsewhere")
    assert code == 0, output
    assert "no offline stats" in output


async def test_a_corrupt_stats_file_is_a_clear_error(tmp_path: Path) -> None:
    await _serve(tmp_path / "state", tmp_path / "releases", shift=0.0)
    offline_stats_path(tmp_path / "releases", "r1").write_bytes(b"{not json")
    code, output = _run("check", "--state-dir", tmp_path / "state", "--releases-dir", tmp_path / "releases")
    assert code == 1
    assert "r1.stats.kll" in output
    assert "not a valid offline stats file" in output


def test_an_empty_state_dir_has_nothing_to_check(tmp_path: Path) -> None:
    code, output = _run("check", "--state-dir", tmp_path, "--releases-dir", tmp_path)
    assert code == 0
    assert "nothing observed" in output


@pytest.mark.parametrize("shadow", [False, True])
async def test_report_draws_distributions_history_and_shadow(tmp_path: Path, shadow: bool) -> None:
    await _serve(tmp_path / "state", tmp_path / "releases", shift=1.0, shadow=shadow)
    out = tmp_path / "plots"
    code, output = _run(
        "report", "--state-dir", tmp_path / "state", "--releases-dir", tmp_path / "releases", "--out", out
    )
    assert code == 1, output  # exits like check
    expected = {"distributions-ranker-r1.png", "history-ranker-r1.png"} | (
        {"shadow-ranker-v2.png"} if shadow else set()
    )
    assert {p.name for p in out.iterdir()} == expected
    for path in out.iterdir():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 1000
        assert f"wrote {path}" in output.replace("\n", "")
    assert ("no shadow diffs" in output) is not shadow
