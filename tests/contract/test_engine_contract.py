"""The `Engine` contract, run against every implementation: the fake and each real backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from engines._offload import Offloader
from engines.base import Engine
from engines.errors import BadInput, EngineTimeout, EngineUnavailable, ModelNotFound
from engines.fake import FakeEngine
from engines.onnx import OnnxEngine
from engines.tfserving import TFServingEngine
from engines.triton import TritonEngine
from engines.types import ModelRef, Tensors
from engines.xgboost import XGBoostEngine
from quasar.demo.onnx_export import dense_forward
from tests.peers.fixtures import session_tfserving_peer, session_triton_peer
from tests.unit.engines.models import MLP_METADATA, Mlp, booster_reference, occupied, train_booster


@dataclass
class Case:
    """One engine under test, not started, with a model it serves and how to check its answers."""

    engine: Engine
    model: str
    input_name: str
    make_input: Callable[[int], np.ndarray]  # batch size -> a valid input tensor
    reference: Callable[[np.ndarray], dict[str, np.ndarray]]
    block: Callable[[], AbstractAsyncContextManager[object]]  # calls made inside wait until it exits


def mlp_case(engine_factory: Callable[[Mlp], tuple[Engine, Callable[[], AbstractAsyncContextManager[object]]]]) -> Case:
    mlp = Mlp.random(seed=5)
    engine, block = engine_factory(mlp)
    rng = np.random.default_rng(0)
    return Case(
        engine=engine,
        model="mlp",
        input_name="features",
        make_input=lambda n: rng.normal(size=(n, 8)).astype(np.float32),
        reference=lambda x: {"scores": mlp(x)},
        block=block,
    )


def fake_case(tmp_path: Path, offloader: Offloader) -> Case:
    def build(mlp: Mlp) -> tuple[Engine, Callable[[], AbstractAsyncContextManager[object]]]:
        async def answer(model: ModelRef, inputs: Tensors) -> dict[str, np.ndarray]:
            return {"scores": mlp(inputs["features"])}

        engine = FakeEngine("fake", answer, metadata={"mlp": MLP_METADATA}, version=MLP_METADATA.version)

        @asynccontextmanager
        async def block() -> AsyncIterator[object]:
            gate = asyncio.Event()
            engine.block_until(gate)
            yield gate
            engine.block_until(None)
            gate.set()

        return engine, block

    return mlp_case(build)


def onnx_case(tmp_path: Path, offloader: Offloader) -> Case:
    def build(mlp: Mlp) -> tuple[Engine, Callable[[], AbstractAsyncContextManager[object]]]:
        # On threads: a call that can be held back and timed out (inline calls are tested in unit tests).
        engine = OnnxEngine(
            "onnx", {"mlp": mlp.save_onnx(tmp_path / "mlp.onnx", version="7")}, offloader, run_on="threads"
        )
        return engine, lambda: occupied(offloader)

    return mlp_case(build)


def xgboost_case(tmp_path: Path, offloader: Offloader) -> Case:
    booster = train_booster(tmp_path / "fpr.ubj", n_features=6)
    rng = np.random.default_rng(0)
    return Case(
        engine=XGBoostEngine("xgboost", {"fpr": tmp_path / "fpr.ubj"}, offloader, run_on="threads"),
        model="fpr",
        input_name="features",
        make_input=lambda n: rng.random((n, 6), dtype=np.float32),
        reference=lambda x: {"score": booster_reference(booster, x)},
        block=lambda: occupied(offloader),
    )


def ranker_case(engine: Engine, small_world: Path, hold: Callable[[], AbstractContextManager[None]]) -> Case:
    """A remote engine serving the world's ranker (`feed_ranker`) from a real peer; `hold` makes the
    peer keep calls waiting."""
    with np.load(small_world / "models" / "ranker_weights.npz") as npz:
        weights = {name: npz[name] for name in npz.files}
    rng = np.random.default_rng(0)

    @asynccontextmanager
    async def block() -> AsyncIterator[object]:
        with hold():
            yield None

    return Case(
        engine=engine,
        model="feed_ranker",
        input_name="features",
        make_input=lambda n: rng.normal(size=(n, weights["input_scale"].shape[0])).astype(np.float32),
        reference=lambda x: {"scores": dense_forward(weights, x)},
        block=block,
    )


def tfserving_case(request: pytest.FixtureRequest) -> Case:
    """The TF Serving engine against the conformance peer (one per session, see tests.peers.fixtures)."""
    world: Path = request.getfixturevalue("small_world")
    base = request.getfixturevalue("tmp_path_factory").getbasetemp()
    peer = session_tfserving_peer(request.config, world, base)
    return ranker_case(TFServingEngine("tfserving", peer.url, "feed_ranker", startup_timeout_s=5.0), world, peer.hold)


def triton_case(request: pytest.FixtureRequest) -> Case:
    """The Triton engine against a real Triton server (PyTriton; one per session)."""
    world: Path = request.getfixturevalue("small_world")
    peer = session_triton_peer(request.config, world)
    engine = TritonEngine("triton", peer.url_grpc, {"feed_ranker": peer.model}, headers=peer.grpc_headers)
    return ranker_case(engine, world, peer.hold)


REMOTE_CASES = (tfserving_case, triton_case)


@pytest_asyncio.fixture(
    params=[fake_case, onnx_case, xgboost_case, tfserving_case, triton_case],
    ids=["fake", "onnx", "xgboost", "tfserving", "triton"],
    loop_scope="session",  # the loop the tests run on: gRPC channels are bound to the loop that made them
)
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    offloader = Offloader(max_workers=1, max_pending=16)
    made: Case = request.param(request) if request.param in REMOTE_CASES else request.param(tmp_path, offloader)
    await made.engine.start()
    yield made
    await made.engine.close()
    offloader.close()


async def test_is_an_engine(case: Case) -> None:
    assert isinstance(case.engine, Engine)
    assert await case.engine.ready()


async def test_answers_match_the_reference(case: Case) -> None:
    for batch in (1, 17):
        x = case.make_input(batch)
        outputs = await case.engine.infer(ModelRef(case.model), {case.input_name: x}, timeout_s=5.0)
        expected = case.reference(x)
        assert set(outputs) == set(expected)
        for name, value in expected.items():
            assert outputs[name].dtype == value.dtype
            np.testing.assert_allclose(outputs[name], value, atol=1e-6, rtol=0)


async def test_concurrent_calls_get_their_own_answers(case: Case) -> None:
    inputs = [case.make_input(n) for n in range(1, 11)]
    results = await asyncio.gather(*(case.engine.infer(ModelRef(case.model), {case.input_name: x}) for x in inputs))
    for x, outputs in zip(inputs, results, strict=True):
        for name, value in case.reference(x).items():
            np.testing.assert_allclose(outputs[name], value, atol=1e-6, rtol=0)


async def test_metadata_describes_what_infer_accepts_and_returns(case: Case) -> None:
    meta = await case.engine.metadata(ModelRef(case.model))
    assert meta.name == case.model
    assert meta.version
    assert [spec.name for spec in meta.inputs] == [case.input_name]
    x = case.make_input(3)
    spec = meta.input(case.input_name)
    assert spec.dtype == x.dtype.name
    assert len(spec.shape) == x.ndim
    outputs = await case.engine.infer(ModelRef(case.model), {case.input_name: x})
    assert {spec.name: (spec.dtype, len(spec.shape)) for spec in meta.outputs} == {
        name: (value.dtype.name, value.ndim) for name, value in outputs.items()
    }
    # The reported version can be asked for explicitly; any other cannot.
    assert await case.engine.infer(ModelRef(case.model, meta.version), {case.input_name: x})
    with pytest.raises(ModelNotFound):
        await case.engine.infer(ModelRef(case.model, meta.version + "-other"), {case.input_name: x})


async def test_unknown_model(case: Case) -> None:
    with pytest.raises(ModelNotFound) as raised:
        await case.engine.infer(ModelRef("no_such_model"), {case.input_name: case.make_input(2)})
    assert raised.value.target == case.engine.name
    with pytest.raises(ModelNotFound):
        await case.engine.metadata(ModelRef("no_such_model"))


@pytest.mark.parametrize("problem", ["missing", "extra", "dtype", "rank"])
async def test_bad_inputs(case: Case, problem: str) -> None:
    x = case.make_input(4)
    inputs = {
        "missing": {},
        "extra": {case.input_name: x, "unexpected": x},
        "dtype": {case.input_name: x.astype(np.float64)},
        "rank": {case.input_name: x[0]},
    }[problem]
    with pytest.raises(BadInput, match=case.input_name if problem != "extra" else "unexpected"):
        await case.engine.infer(ModelRef(case.model), inputs)


async def test_timeout(case: Case) -> None:
    async with case.block():
        with pytest.raises(EngineTimeout):
            await case.engine.infer(ModelRef(case.model), {case.input_name: case.make_input(2)}, timeout_s=0.05)
    # Once unblocked, the engine answers again.
    assert await case.engine.infer(ModelRef(case.model), {case.input_name: case.make_input(2)}, timeout_s=5.0)


async def test_unavailable_after_close(case: Case) -> None:
    await case.engine.close()
    assert not await case.engine.ready()
    with pytest.raises(EngineUnavailable):
        await case.engine.infer(ModelRef(case.model), {case.input_name: case.make_input(2)})
