from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from engines._offload import Offloader
from engines.errors import BadInput, BadOutput, EngineOverloaded, EngineTimeout, EngineUnavailable, ModelNotFound
from engines.onnx import OnnxEngine
from engines.types import ModelRef, TensorSpec
from tests.unit.engines.models import N_FEATURES, Mlp, occupied, save_log_model

MLP = ModelRef("mlp")


@pytest.fixture
def offloader() -> Iterator[Offloader]:
    pool = Offloader(max_workers=1, max_pending=2)
    yield pool
    pool.close()


@pytest.fixture
def mlp() -> Mlp:
    return Mlp.random(seed=3)


@pytest_asyncio.fixture(loop_scope="function")
async def engine(tmp_path: Path, offloader: Offloader, mlp: Mlp) -> AsyncIterator[OnnxEngine]:
    models = {"mlp": mlp.save_onnx(tmp_path / "mlp.onnx", version="7"), "log": save_log_model(tmp_path / "log.onnx")}
    engine = OnnxEngine("local_onnx", models, offloader)
    await engine.start()
    yield engine
    await engine.close()


def features(n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(np.float32)


async def test_scores_match_numpy(engine: OnnxEngine, mlp: Mlp) -> None:
    x = features(33)
    outputs = await engine.infer(MLP, {"features": x})
    assert set(outputs) == {"scores"}
    assert outputs["scores"].dtype == np.float32
    assert outputs["scores"].shape == (33, 4)
    np.testing.assert_allclose(outputs["scores"], mlp(x), atol=1e-6, rtol=0)


async def test_metadata_comes_from_the_session(engine: OnnxEngine) -> None:
    meta = await engine.metadata(MLP)
    assert meta.name == "mlp"
    assert meta.version == "7"
    assert meta.inputs == (TensorSpec("features", "float32", (-1, 8)),)
    assert meta.outputs == (TensorSpec("scores", "float32", (-1, 4)),)


async def test_version_defaults_to_a_sha256_prefix_of_the_file(tmp_path: Path, offloader: Offloader) -> None:
    path = Mlp.random().save_onnx(tmp_path / "plain.onnx")
    engine = OnnxEngine("e", {"plain": path}, offloader)
    await engine.start()
    meta = await engine.metadata(ModelRef("plain"))
    assert meta.version == hashlib.sha256(path.read_bytes()).hexdigest()[:12]


async def test_uses_cpu_when_cuda_is_absent(engine: OnnxEngine) -> None:
    assert engine.providers[-1] == "CPUExecutionProvider"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, r"missing inputs \['features'\]; model expects \['features'\]"),
        (
            {"features": features(), "extra": features()},
            r"unexpected inputs \['extra'\]; model expects \['features'\]",
        ),
        ({"features": features().astype(np.float64)}, "input 'features' has dtype float64; model expects float32"),
        ({"features": features()[0]}, r"input 'features' has rank 1 \(shape \(8,\)\); model expects rank 2"),
        ({"features": features()[:, :7]}, "dimension 1 must be 8, got 7"),
        ({"features": features().tolist()}, "input 'features' must be a numpy array, got list"),
    ],
    ids=["missing", "extra", "dtype", "rank", "fixed-dim", "not-array"],
)
async def test_rejects_inputs_that_do_not_match_the_signature(
    engine: OnnxEngine, offloader: Offloader, inputs: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(BadInput, match=message) as raised:
        await engine.infer(MLP, inputs)
    assert (raised.value.target, raised.value.model) == ("local_onnx", "mlp")
    assert offloader.in_flight == 0


async def test_rejects_non_finite_outputs(engine: OnnxEngine) -> None:
    with pytest.raises(BadOutput, match="output 'y' holds 1 non-finite values of 3"):
        await engine.infer(ModelRef("log"), {"x": np.array([1.0, -1.0, 2.0], dtype=np.float32)})


async def test_unknown_model_or_version(engine: OnnxEngine) -> None:
    with pytest.raises(ModelNotFound, match=r"no model 'ranker'; serving \['log', 'mlp'\]"):
        await engine.infer(ModelRef("ranker"), {"features": features()})
    with pytest.raises(ModelNotFound, match="has no version '8'; serving '7'"):
        await engine.metadata(ModelRef("mlp", "8"))
    assert (await engine.infer(ModelRef("mlp", "7"), {"features": features()}))["scores"].shape == (5, 4)


async def test_cpu_calls_run_inline_on_the_loop_and_need_no_offloader_slot(
    engine: OnnxEngine, offloader: Offloader, mlp: Mlp
) -> None:
    async with occupied(offloader):  # every thread busy: an inline call does not wait for one
        x = features(7)
        outputs = await engine.infer(MLP, {"features": x}, timeout_s=5)
        np.testing.assert_allclose(outputs["scores"], mlp(x), atol=1e-6, rtol=0)
        assert offloader.in_flight == 1
        with pytest.raises(EngineTimeout, match="no time left") as raised:
            await engine.infer(MLP, {"features": x}, timeout_s=0.0)
        assert raised.value.target == "local_onnx"


async def test_times_out_while_the_offloader_is_busy(tmp_path: Path, offloader: Offloader, mlp: Mlp) -> None:
    engine = OnnxEngine("local_onnx", {"mlp": mlp.save_onnx(tmp_path / "m.onnx")}, offloader, run_on="threads")
    await engine.start()
    async with occupied(offloader):
        with pytest.raises(EngineTimeout, match=r"no answer within 0.05s") as raised:
            await engine.infer(MLP, {"features": features()}, timeout_s=0.05)
        assert raised.value.target == "local_onnx"
        assert offloader.in_flight == 1  # the timed-out call never started, so only the holder counts


async def test_overload_is_reported_with_the_target(engine: OnnxEngine, tmp_path: Path, mlp: Mlp) -> None:
    tight = Offloader(max_workers=1, max_pending=0)
    small = OnnxEngine("tight", {"mlp": mlp.save_onnx(tmp_path / "m.onnx")}, tight, run_on="threads")
    await small.start()
    try:
        async with occupied(tight):
            with pytest.raises(EngineOverloaded) as raised:
                await small.infer(MLP, {"features": features()})
        assert (raised.value.target, raised.value.model) == ("tight", "mlp")
    finally:
        tight.close()


async def test_lifecycle(tmp_path: Path, offloader: Offloader, mlp: Mlp) -> None:
    engine = OnnxEngine("e", {"mlp": mlp.save_onnx(tmp_path / "m.onnx")}, offloader)
    assert not await engine.ready()
    with pytest.raises(EngineUnavailable, match="not started"):
        await engine.infer(MLP, {"features": features()})
    await engine.start()
    assert await engine.ready()
    await engine.close()
    assert not await engine.ready()
    with pytest.raises(EngineUnavailable, match="closed"):
        await engine.infer(MLP, {"features": features()})


async def test_start_names_the_model_that_failed_to_load(tmp_path: Path, offloader: Offloader) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    engine = OnnxEngine("e", {"broken": broken}, offloader)
    with pytest.raises(EngineUnavailable, match="cannot load") as raised:
        await engine.start()
    assert raised.value.model == "broken"
    assert not await engine.ready()
