"""Compiled XGBoost trees (Treelite + TL2cgen, a real gcc): parity with the booster, the per-user cache,
the parity guard, and the engine's fallback to XGBoost's own predictor."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from engines._offload import Offloader
from engines.compiled_trees import CompileFailed, compile_booster
from engines.types import ModelRef
from engines.xgboost import XGBoostEngine
from tests.unit.engines.models import booster_reference, train_booster


def rows(n: int, width: int, seed: int = 3) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, width), dtype=np.float32)
    x[::7, 1] = np.nan  # the booster's missing value takes each tree's default branch
    return x


def test_compiled_predictions_match_the_booster_and_the_library_is_cached(tmp_path: Path) -> None:
    booster = train_booster(tmp_path / "m.ubj", n_features=5)
    data = (tmp_path / "m.ubj").read_bytes()
    compiled = compile_booster(booster, data, tmp_path / "cache")
    x = rows(300, 5)
    np.testing.assert_allclose(compiled.predict(x), booster_reference(booster, x), atol=1e-6)
    assert compiled.predict(x).dtype == np.float32
    assert compiled.predict(x[:1]).shape == (1,)
    assert compiled.library.parent == tmp_path / "cache"
    built = compiled.library.stat().st_mtime_ns
    again = compile_booster(booster, data, tmp_path / "cache")
    assert again.library == compiled.library
    assert again.library.stat().st_mtime_ns == built, "reused, not rebuilt"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [compiled.library.name], "no build leftovers"


def test_a_library_that_answers_differently_is_refused(tmp_path: Path) -> None:
    """The cache is keyed by the model's bytes; a library under that key that is not this model's (a
    corrupted or planted cache entry) fails the parity check instead of serving wrong scores."""
    first = train_booster(tmp_path / "a.ubj", n_features=5, seed=0)
    second = train_booster(tmp_path / "b.ubj", n_features=5, seed=1)
    other = compile_booster(first, (tmp_path / "a.ubj").read_bytes(), tmp_path / "cache")
    data = (tmp_path / "b.ubj").read_bytes()
    own = compile_booster(second, data, tmp_path / "own")
    shutil.copyfile(other.library, tmp_path / "cache" / own.library.name)  # b's key, a's library
    with pytest.raises(CompileFailed, match="differ from XGBoost's by up to"):
        compile_booster(second, data, tmp_path / "cache")


def test_a_multi_output_booster_is_not_compiled(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((90, 4), dtype=np.float32)
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "nthread": 1},
        xgb.DMatrix(x, label=np.arange(90) % 3),
        num_boost_round=2,
    )
    booster.save_model(str(tmp_path / "multi.ubj"))
    with pytest.raises(CompileFailed):
        compile_booster(booster, (tmp_path / "multi.ubj").read_bytes(), tmp_path / "cache")


async def served_scores(model: Path, cache_dir: Path, x: np.ndarray) -> np.ndarray:
    """`x` scored by an XGBoost engine asked for compiled trees (cached in `cache_dir`)."""
    offloader = Offloader(max_workers=1, max_pending=2)
    engine = XGBoostEngine("xgb", {"m": model}, offloader, predictor="compiled", compile_cache_dir=cache_dir)
    try:
        await engine.start()
        return (await engine.infer(ModelRef("m"), {"features": x}))["score"]
    finally:
        await engine.close()
        offloader.close()


async def test_the_engine_serves_compiled_trees_with_the_booster_scores(tmp_path: Path) -> None:
    booster = train_booster(tmp_path / "m.ubj", n_features=5)
    x = rows(64, 5)
    scores = await served_scores(tmp_path / "m.ubj", tmp_path / "cache", x)
    np.testing.assert_allclose(scores, booster_reference(booster, x), atol=1e-6)
    assert len(list((tmp_path / "cache").glob("*.so"))) == 1, "served by the compiled library"


async def test_the_engine_falls_back_to_xgboost_when_compiling_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    booster = train_booster(tmp_path / "m.ubj", n_features=5)
    (tmp_path / "not-a-dir").write_text("a file where the cache directory should be")
    x = rows(20, 5)
    with caplog.at_level(logging.WARNING, logger="engines.xgboost"):
        scores = await served_scores(tmp_path / "m.ubj", tmp_path / "not-a-dir", x)
    np.testing.assert_allclose(scores, booster_reference(booster, x), atol=1e-6)
    assert any("serving with XGBoost's predictor: compiling the trees failed" in r.getMessage() for r in caplog.records)
