from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import xgboost as xgb

from engines._offload import Offloader
from engines.errors import BadInput, BadOutput, EngineTimeout, EngineUnavailable, ModelNotFound
from engines.types import ModelRef, TensorSpec
from engines.xgboost import XGBoostEngine
from tests.unit.engines.models import booster_reference, occupied, train_booster

FPR = ModelRef("fpr")


@pytest.fixture
def offloader() -> Iterator[Offloader]:
    pool = Offloader(max_workers=1, max_pending=2)
    yield pool
    pool.close()


@pytest.fixture
def booster(tmp_path: Path) -> xgb.Booster:
    return train_booster(tmp_path / "fpr.ubj", n_features=5, version="2024-01")


@pytest_asyncio.fixture(loop_scope="function")
async def engine(tmp_path: Path, offloader: Offloader, booster: xgb.Booster) -> AsyncIterator[XGBoostEngine]:
    engine = XGBoostEngine("local_xgb", {"fpr": tmp_path / "fpr.ubj"}, offloader)
    await engine.start()
    yield engine
    await engine.close()


def features(n: int = 6, width: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, width), dtype=np.float32)


async def test_scores_match_booster_predict(engine: XGBoostEngine, booster: xgb.Booster) -> None:
    x = features(50)
    outputs = await engine.infer(FPR, {"features": x})
    assert set(outputs) == {"score"}
    assert outputs["score"].dtype == np.float32
    assert outputs["score"].shape == (50,)
    np.testing.assert_allclose(outputs["score"], booster_reference(booster, x), atol=1e-6, rtol=0)


async def test_metadata_declares_the_fixed_signature(engine: XGBoostEngine) -> None:
    meta = await engine.metadata(FPR)
    assert meta.version == "2024-01"  # the booster's 'version' attribute
    assert meta.inputs == (TensorSpec("features", "float32", (-1, 5)),)
    assert meta.outputs == (TensorSpec("score", "float32", (-1,)),)


async def test_version_defaults_to_a_sha256_prefix(tmp_path: Path, offloader: Offloader) -> None:
    path = tmp_path / "plain.json"
    train_booster(path)
    engine = XGBoostEngine("e", {"plain": path}, offloader)
    await engine.start()
    assert (await engine.metadata(ModelRef("plain"))).version == hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": features()}, r"missing inputs \['features'\]"),
        ({"features": features(width=4)}, r"has shape \(6, 4\); model expects \(-1, 5\) \(dimension 1 must be 5"),
        ({"features": features().astype(np.float64)}, "dtype float64; model expects float32"),
    ],
    ids=["missing", "width", "dtype"],
)
async def test_rejects_inputs_that_do_not_match(
    engine: XGBoostEngine, inputs: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(BadInput, match=message):
        await engine.infer(FPR, inputs)


async def test_a_multi_output_booster_fails_with_bad_output(tmp_path: Path, offloader: Offloader) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((60, 3), dtype=np.float32)
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "nthread": 1},
        xgb.DMatrix(x, label=rng.integers(0, 3, 60)),
        num_boost_round=2,
    )
    booster.save_model(str(tmp_path / "multi.ubj"))
    engine = XGBoostEngine("e", {"multi": tmp_path / "multi.ubj"}, offloader)
    await engine.start()
    with pytest.raises(BadOutput, match="output 'score' has rank 2"):
        await engine.infer(ModelRef("multi"), {"features": x})


async def test_unknown_model(engine: XGBoostEngine) -> None:
    with pytest.raises(ModelNotFound, match=r"no model 'other'; serving \['fpr'\]"):
        await engine.infer(ModelRef("other"), {"features": features()})


async def test_times_out_while_the_offloader_is_busy(
    tmp_path: Path, offloader: Offloader, booster: xgb.Booster
) -> None:
    engine = XGBoostEngine("local_xgb", {"fpr": tmp_path / "fpr.ubj"}, offloader, run_on="threads")
    await engine.start()
    async with occupied(offloader):
        with pytest.raises(EngineTimeout, match=r"no answer within 0.05s"):
            await engine.infer(FPR, {"features": features()}, timeout_s=0.05)


async def test_calls_run_inline_by_default_and_need_no_offloader_slot(
    engine: XGBoostEngine, offloader: Offloader
) -> None:
    async with occupied(offloader):
        scores = (await engine.infer(FPR, {"features": features()}, timeout_s=5))["score"]
        assert scores.shape == (len(features()),)
        with pytest.raises(EngineTimeout, match="no time left"):
            await engine.infer(FPR, {"features": features()}, timeout_s=0.0)


async def test_start_fails_for_a_missing_file(tmp_path: Path, offloader: Offloader) -> None:
    engine = XGBoostEngine("e", {"gone": tmp_path / "gone.ubj"}, offloader)
    with pytest.raises(EngineUnavailable, match="cannot load"):
        await engine.start()
