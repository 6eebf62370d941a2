"""Cross-backend parity: the same second-pass DNN in process (ONNX Runtime), on Triton and through the TF
Serving conformance peer (a TensorFlow SavedModel) gives the same scores, and the feed workflow switched
between them by route config alone returns the same ranked list."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from engines._offload import Offloader
from engines.config import RouteConfig, TFServingEngineConfig, TritonEngineConfig
from engines.onnx import OnnxEngine
from engines.types import ModelRef
from quasar.demo.layout import RANKER_INPUT, RANKER_OUTPUT
from quasar.demo.onnx_export import check_parity, dense_forward
from quasar.v1 import feed_pb2
from tests.integration.federation.conftest import (
    RANKER,
    federated_engines,
    gateway_on,
    started,
    target,
    tfserving_config,
    triton_config,
)
from tests.peers.tfserving_peer import TFServingPeer
from tests.peers.triton_server import TritonPeer

TOLERANCE = 1e-5
MEMBERS = (3, 42, 99, 250, 777)


@pytest.fixture(scope="module")
async def offloader() -> AsyncIterator[Offloader]:
    pool = Offloader(max_workers=1, max_pending=16)
    yield pool
    pool.close()


async def test_engines_agree_on_500_world_rows(
    small_world: Path,
    world_rows: np.ndarray,
    triton_peer: TritonPeer,
    tfserving_peer: TFServingPeer,
    offloader: Offloader,
    record_property: Callable[[str, object], None],
) -> None:
    with np.load(small_world / "models" / "ranker_weights.npz") as npz:
        weights = {name: npz[name] for name in npz.files}
    engines = {
        "onnx": OnnxEngine("onnx", {RANKER: small_world / "models" / "ranker.onnx"}, offloader),
        "triton": triton_config(triton_peer).build("triton", offloader),
        "tfserving": tfserving_config(tfserving_peer).build("tfserving", offloader),
    }
    scores: dict[str, np.ndarray] = {"numpy": dense_forward(weights, world_rows)}
    for name, engine in engines.items():
        async with started(engine):
            meta = await engine.metadata(ModelRef(RANKER))
            assert [(s.name, s.dtype, s.shape[1:]) for s in meta.inputs] == [(RANKER_INPUT, "float32", (77,))]
            outputs = await engine.infer(ModelRef(RANKER), {RANKER_INPUT: world_rows}, timeout_s=10.0)
        scores[name] = outputs[RANKER_OUTPUT]
        assert scores[name].shape == (500, 4)
        assert scores[name].dtype == np.float32
    diffs = {name: float(np.max(np.abs(scores[name] - scores["onnx"]))) for name in ("triton", "tfserving", "numpy")}
    record_property("max_abs_diff_vs_onnx", diffs)
    print(f"\nmax abs diff vs in-process ONNX over 500 rows: {diffs}")
    assert check_parity(scores, tolerance=TOLERANCE) <= TOLERANCE


def _route(engine: str) -> RouteConfig:
    return RouteConfig(targets=[target(engine)])


async def _feeds(
    world: Path, engine: str, extra: Mapping[str, TritonEngineConfig | TFServingEngineConfig]
) -> dict[int, feed_pb2.GetFeedResponse]:
    config = federated_engines(world, _route(engine), extra)
    async with gateway_on(world, config) as gateway:
        return {
            member: await gateway.stub.GetFeed(feed_pb2.GetFeedRequest(member_id=member, count=50), timeout=10)
            for member in MEMBERS
        }


async def test_feed_is_the_same_whichever_backend_the_route_names(
    small_world: Path, triton_peer: TritonPeer, tfserving_peer: TFServingPeer
) -> None:
    extra: dict[str, TritonEngineConfig | TFServingEngineConfig] = {
        "triton": triton_config(triton_peer),
        "tfs": tfserving_config(tfserving_peer),
    }
    feeds = {engine: await _feeds(small_world, engine, extra) for engine in ("local_onnx", "triton", "tfs")}
    for member in MEMBERS:
        reference = feeds["local_onnx"][member]
        assert len(reference.items) == 50
        for engine in ("triton", "tfs"):
            response = feeds[engine][member]
            assert not response.degraded, (engine, list(response.degraded_reasons))
            used = {m.model: m.target for m in response.model_versions}
            assert used[RANKER] == f"{engine}/{RANKER}", "the route alone chose the backend"
            assert [i.item_id for i in response.items] == [i.item_id for i in reference.items], (engine, member)
            np.testing.assert_allclose(
                [i.score for i in response.items], [i.score for i in reference.items], atol=TOLERANCE, rtol=0
            )
            np.testing.assert_allclose(
                [[o.score for o in i.objective_scores] for i in response.items],
                [[o.score for o in i.objective_scores] for i in reference.items],
                atol=TOLERANCE,
                rtol=0,
            )
