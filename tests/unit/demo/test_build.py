"""build_world end to end: deterministic in its seed, idempotent, loud when an export is wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from quasar.demo import build as build_module
from quasar.demo import layout as fs
from quasar.demo import onnx_export
from quasar.demo.build import MANIFEST_FILE, WorldBuildError, WorldManifest, build_world, load_manifest

TINY = {"members": 300, "items": 3_000, "hashtags": 100}


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Path, WorldManifest], ...]:
    """Two builds with seed 1 and one with seed 2."""
    built = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path_factory.mktemp(f"world-{name}")
        built.append((out, build_world(out, seed=seed, progress=False, clock=lambda: NOW_S, **TINY)))
    return tuple(built)


NOW_S = 1_765_000_000.0  # one build day for every build of these tests, even across midnight


def _data_files(out: Path) -> dict[str, bytes]:
    """Declarations and every table version's arrays (what serving reads)."""
    files = [*out.glob("features/*.yaml"), *out.glob("workflows/*.yaml"), *out.glob("engines/*.yaml")]
    files += [*out.glob("store/*/versions/*/*.npy")]
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(files)}


def _scores(out: Path, manifest: WorldManifest) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (256, manifest.ranker_input_dim)).astype(np.float32)
    return onnx_export.run_onnx(manifest.model_path(out, "ranker"), x)


def _timeless(manifest: WorldManifest) -> dict[str, object]:
    raw = dataclasses.asdict(manifest)
    raw.pop("build_seconds")
    for report in ("first_pass", "ranker"):
        raw["training"][report].pop("seconds")
    raw["training"].pop("stage_seconds")
    return raw


def test_same_seed_same_world(twins: tuple[tuple[Path, WorldManifest], ...]) -> None:
    (a, ma), (b, mb), _ = twins
    assert _data_files(a) == _data_files(b)
    for name in ("first_pass", "ranker", "ranker_weights"):
        assert ma.models[name].sha256 == mb.models[name].sha256, name
    np.testing.assert_array_equal(_scores(a, ma), _scores(b, mb))
    assert _timeless(ma) == _timeless(mb)


def test_other_seed_other_world(twins: tuple[tuple[Path, WorldManifest], ...]) -> None:
    (a, ma), _, (c, mc) = twins
    assert _data_files(a) != _data_files(c)
    assert ma.ranker_version != mc.ranker_version
    assert all(ma.tables[t].version != mc.tables[t].version for t in ma.tables)
    assert not np.array_equal(_scores(a, ma), _scores(c, mc))


def test_manifest_round_trips(twins: tuple[tuple[Path, WorldManifest], ...]) -> None:
    out, manifest = twins[0]
    assert load_manifest(out) == manifest
    assert (manifest.members, manifest.items, manifest.hashtags, manifest.seed) == (300, 3_000, 100, 1)
    assert manifest.impressions == 30 * 300
    assert manifest.tables["hashtag"].first_id == 0
    assert manifest.tables["hashtag"].count == 100
    assert manifest.tables["item"].first_id == 1
    assert manifest.tables["item"].count == 3_000


def test_rebuild_is_skipped_unless_forced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_world(tmp_path, seed=3, progress=False, **TINY)
    stamp = (tmp_path / MANIFEST_FILE).stat().st_mtime_ns

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a world that was up to date")

    monkeypatch.setattr(build_module, "generate_corpus", fail)
    assert build_world(tmp_path, seed=3, progress=False, **TINY) == first
    assert (tmp_path / MANIFEST_FILE).stat().st_mtime_ns == stamp
    monkeypatch.undo()

    forced = build_world(tmp_path, seed=3, progress=False, force=True, **TINY)
    assert forced.tables == first.tables  # same content, same (reused) versions
    assert forced.models == first.models
    other = build_world(tmp_path, seed=4, progress=False, **TINY)  # other seed: rebuilt in place
    assert other.seed == 4
    assert load_manifest(tmp_path) == other
    assert other.tables["item"].version != first.tables["item"].version


def test_load_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="build the world"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text('{"seed": 1}')
    with pytest.raises(ValueError, match="not a world manifest"):
        load_manifest(tmp_path)


def test_build_fails_loudly_when_the_export_disagrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = onnx_export.dense_forward

    def drifting(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        return real(weights, x) + np.float32(1e-3)

    monkeypatch.setattr(onnx_export, "dense_forward", drifting)
    with pytest.raises(WorldBuildError, match="parity"):
        build_world(tmp_path, seed=1, progress=False, **TINY)
    assert not (tmp_path / MANIFEST_FILE).exists()


def test_progress_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_world(tmp_path, seed=1, progress=True, **TINY)
    out = capsys.readouterr().out
    for stage in (
        "corpus",
        "feature tables",
        "interactions",
        "first pass",
        "ranker",
        "export + parity",
        "store tables",
    ):
        assert stage in out
    assert "held-out AUC" in out
    assert "world ready" in out
    build_world(tmp_path, seed=1, progress=False, force=True, **TINY)
    assert capsys.readouterr().out == ""
    assert fs.OBJECTIVES[0] in out


def test_incomplete_world_is_rebuilt(tmp_path: Path) -> None:
    first = build_world(tmp_path, seed=3, progress=False, **TINY)
    (tmp_path / "store" / "item" / "CURRENT").unlink()
    stamp = (tmp_path / MANIFEST_FILE).stat().st_mtime_ns
    again = build_world(tmp_path, seed=3, progress=False, **TINY)
    assert (tmp_path / MANIFEST_FILE).stat().st_mtime_ns != stamp
    assert again.tables == first.tables
    assert (tmp_path / "store" / "item" / "CURRENT").read_text().strip() == first.tables["item"].version
    assert build_world(tmp_path, seed=3, impressions=5_000, progress=False, **TINY).impressions == 5_000


def test_build_fails_loudly_when_declarations_disagree_with_the_worlds_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quasar.demo import feed_product

    swapped = ("item_age_days", "item_log_popularity", *feed_product.FIRST_PASS_INPUTS[2:])
    monkeypatch.setattr(feed_product, "FIRST_PASS_INPUTS", swapped)
    with pytest.raises(WorldBuildError, match="declared first-pass features differ from the world's layout"):
        build_world(tmp_path, seed=1, progress=False, **TINY)
    assert not (tmp_path / MANIFEST_FILE).exists()
