"""XGBoost on Ray Serve: `quasar ray deploy`, the `ray` engine against it, and a gateway routing to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from engines import Offloader
from engines.config import EnginesConfig, RayServeEngineConfig
from engines.errors import BadInput, ModelNotFound
from engines.ray_serve import RayServeEngine
from engines.types import ModelRef
from engines.xgboost import XGBoostEngine
from quasar.cli import main
from quasar.v1 import feed_pb2
from tests.integration.conftest import Gates, RunningGateway, make_settings, start_gateway

APP = "quasar-test-xgb"
FIRST_PASS = ModelRef("first_pass")


@pytest.fixture(scope="module")
def deployed(ray_instance: None, small_world: Path) -> str:
    """first_pass deployed by the CLI, 2 replicas (quarter CPUs, so everything fits in 2)."""
    model = small_world / "models" / "first_pass.ubj"
    result = CliRunner().invoke(
        main,
        [
            *("ray", "deploy", "--model", str(model), "--name", "first_pass", "--replicas", "2"),
            *("--address", "local", "--app-name", APP, "--replica-cpus", "0.25", "--max-batch-size", "16"),
        ],
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
async def engines(deployed: str, small_world: Path) -> AsyncIterator[tuple[RayServeEngine, XGBoostEngine]]:
    """The ray engine attached to the CLI's app, beside the in-process engine over the same file."""
    offloader = Offloader(max_workers=2, max_pending=16)
    on_ray = RayServeEngine("ray_xgb", RayServeEngineConfig(address="local", app_name=APP), offloader)
    local = XGBoostEngine("local", {"first_pass": small_world / "models" / "first_pass.ubj"}, offloader)
    await on_ray.start()
    await local.start()
    yield on_ray, local
    await on_ray.close()
    await local.close()
    offloader.close()


def test_cli_reports_the_deployment_and_the_engine_config(deployed: str) -> None:
    assert "deployed first_pass (version " in deployed
    assert f"8 features) as Ray Serve app '{APP}', deployment 'XGBoostScorer', 2 replicas" in deployed
    assert f"ray_xgboost: {{kind: ray, address: 'local', app_name: '{APP}'}}" in deployed


async def test_scores_match_the_in_process_engine_under_concurrent_batched_calls(
    engines: tuple[RayServeEngine, XGBoostEngine],
) -> None:
    on_ray, local = engines
    assert await on_ray.ready()
    assert await on_ray.metadata(FIRST_PASS) == await local.metadata(FIRST_PASS), "same version and signature"
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(rows, 8)).astype(np.float32) for rows in (1, 7, 64, 3, 500, 2, 31, 1) * 4]
    remote = await asyncio.gather(*(on_ray.infer(FIRST_PASS, {"features": f}, timeout_s=30) for f in batches))
    for features, answer in zip(batches, remote, strict=True):
        expected = await local.infer(FIRST_PASS, {"features": features})
        assert answer["score"].shape == (len(features),), "each call gets its own rows back from a batch"
        np.testing.assert_allclose(answer["score"], expected["score"], rtol=0, atol=1e-6)


async def test_bad_calls_fail_before_reaching_ray(engines: tuple[RayServeEngine, XGBoostEngine]) -> None:
    on_ray, _local = engines
    with pytest.raises(ModelNotFound, match="no model 'second_pass'"):
        await on_ray.infer(ModelRef("second_pass"), {"features": np.zeros((1, 8), np.float32)})
    with pytest.raises(BadInput, match="dimension 1 must be 8, got 5"):
        await on_ray.infer(FIRST_PASS, {"features": np.zeros((1, 5), np.float32)})


async def test_a_gateway_routing_first_pass_to_ray_serves_the_same_feed(
    ray_instance: None, small_world: Path, test_workflows: Path, gateway: RunningGateway
) -> None:
    """The gateway's own engine deploys the app this time (config names the model file)."""
    models = small_world / "models"
    engines = EnginesConfig.model_validate(
        {
            "engines": {
                "local_onnx": {"kind": "onnx", "models": {"feed_ranker": str(models / "ranker.onnx")}},
                "ray_xgb": {
                    "kind": "ray",
                    "address": "local",
                    "app_name": "quasar-test-gateway",
                    "models": {"first_pass": str(models / "first_pass.ubj")},
                    "replica_num_cpus": 0.25,
                },
            },
            "routes": {
                "feed_ranker": {"targets": [{"engine": "local_onnx", "model": "feed_ranker"}]},
                "first_pass": {"targets": [{"engine": "ray_xgb", "model": "first_pass", "timeout_s": 5}]},
            },
        }
    )
    on_ray = await start_gateway(make_settings(small_world, test_workflows, engines=engines), Gates())
    try:
        for member in (42, 7):
            request = feed_pb2.GetFeedRequest(member_id=member)
            answer = await on_ray.stub.GetFeed(request, timeout=30)
            reference = await gateway.stub.GetFeed(request, timeout=10)  # in-process XGBoost
            assert not answer.degraded, answer.degraded_reasons
            assert len(answer.items) == 50
            versions = {m.model: (m.target, m.version) for m in answer.model_versions}
            local_versions = {m.model: (m.target, m.version) for m in reference.model_versions}
            assert versions["first_pass"] == ("ray_xgb/first_pass", local_versions["first_pass"][1])
            assert [i.item_id for i in answer.items] == [i.item_id for i in reference.items]
            np.testing.assert_allclose([i.score for i in answer.items], [i.score for i in reference.items], atol=1e-6)
    finally:
        await on_ray.channel.close()
        await on_ray.server.drain_and_stop()
