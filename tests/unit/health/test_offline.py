from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from health import (
    ModelSketches,
    OfflineStats,
    load_offline_stats,
    offline_stats,
    offline_stats_path,
    release_stats_loader,
    save_offline_stats,
    watched_columns,
)
from tests.unit.health.model import FEATURES, HEADS, call, signature


def test_offline_stats_read_the_columns_the_monitor_reads() -> None:
    inputs, outputs = call(np.random.default_rng(0), 3000)
    stats = offline_stats(signature(), inputs, outputs, k=4000)  # k above the rows: exact, so comparable
    assert stats.model == "ranker"
    assert (stats.sketches.features, stats.sketches.heads, stats.sketches.n) == (FEATURES, HEADS, 3000)
    online = ModelSketches(FEATURES, HEADS, 4000)
    online.update(*watched_columns(signature()).values(inputs, outputs))
    ranks = [0.1, 0.5, 0.9]
    for (kind, name, sketch), (_, _, same) in zip(stats.sketches.named(), online.named(), strict=True):
        assert sketch.get_quantiles(ranks) == same.get_quantiles(ranks), (kind, name)
    norms = np.linalg.norm(inputs["features"][:, 1:4], axis=1)
    assert stats.sketches.sketch("feature", "member_profile.vector").get_max_value() == pytest.approx(norms.max())


def test_a_large_training_set_is_read_in_chunks() -> None:
    inputs, outputs = call(np.random.default_rng(1), 70_000)
    stats = offline_stats(signature(), inputs, outputs, k=200)
    assert stats.sketches.n == 70_000
    assert [int(s.n) for _, _, s in stats.sketches.named()] == [70_000] * 8


def _stats(model: str, seed: int) -> OfflineStats:
    inputs, outputs = call(np.random.default_rng(seed), 500)
    return OfflineStats(model, offline_stats(signature(), inputs, outputs, k=100).sketches)


def test_save_and_load_one_release(tmp_path: Path) -> None:
    path = offline_stats_path(tmp_path, "r7")
    assert path == tmp_path / "r7.stats.kll"
    saved = [_stats("ranker", 1), _stats("ranker_b", 2)]
    save_offline_stats(path, saved)
    loaded = load_offline_stats(path)
    assert sorted(loaded) == ["ranker", "ranker_b"]
    assert loaded["ranker_b"].model == "ranker_b"
    original = saved[1].sketches.sketch("head", "click").get_quantiles([0.5])
    assert loaded["ranker_b"].sketches.sketch("head", "click").get_quantiles([0.5]) == original
    assert [p.name for p in tmp_path.iterdir()] == ["r7.stats.kll"]  # no temporary file left behind


def test_two_stats_of_one_model_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two offline stats"):
        save_offline_stats(tmp_path / "r.stats.kll", [_stats("ranker", 1), _stats("ranker", 2)])


@pytest.mark.parametrize("cut", [0, 10, -5])
def test_a_corrupt_file_is_a_value_error_naming_it(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "r1.stats.kll"
    save_offline_stats(path, [_stats("ranker", 1)])
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut else b"garbage")
    with pytest.raises(ValueError, match=str(path)):
        load_offline_stats(path)


def test_the_release_loader_finds_rereads_and_tolerates_absence(tmp_path: Path) -> None:
    load = release_stats_loader(tmp_path)
    assert load("ranker", "r1") is None  # no file yet
    path = offline_stats_path(tmp_path, "r1")
    save_offline_stats(path, [_stats("ranker", 1)])
    first = load("ranker", "r1")
    assert first is not None
    assert first.sketches.n == 500
    assert load("other", "r1") is None
    assert load("ranker", "r1") is first  # cached while the file is unchanged
    save_offline_stats(path, [_stats("ranker", 3)])
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the filesystem's resolution
    assert load("ranker", "r1") is not first
