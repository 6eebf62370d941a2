"""Failure behaviour of the remote engines and of routes over them: a target that is down, slow, or answers
a malformed tensor raises the right engine error; the route falls back to the in-process ONNX target, the
answer is marked degraded and the gateway's metrics show it."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from engines.base import Engine
from engines.config import RouteConfig, TFServingEngineConfig, TritonEngineConfig
from engines.errors import BadOutput, EngineTimeout, EngineUnavailable
from engines.tfserving import TFServingEngine
from engines.types import ModelRef
from quasar.demo.layout import RANKER_INPUT
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
from tests.peers.fixtures import TF_MALFORMED, TF_SLOW, TF_SLOW_S
from tests.peers.tcp_proxy import TcpProxy
from tests.peers.tfserving_peer import MODEL, TFServingPeer, start_tfserving_peer
from tests.peers.triton_server import TritonPeer

MEMBERS = (42, 99)
SLOW_TIMEOUT_S = 0.2


def _build(config: TritonEngineConfig | TFServingEngineConfig) -> Engine:
    return config.build("remote", None)  # type: ignore[arg-type]  # remote engines take no offloader


async def _call(engine: Engine, model: str, rows: np.ndarray, timeout_s: float = 5.0) -> dict[str, np.ndarray]:
    return await engine.infer(ModelRef(model), {RANKER_INPUT: rows}, timeout_s=timeout_s)


@asynccontextmanager
async def _proxied(port: int) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy.start("127.0.0.1", port)
    try:
        yield proxy
    finally:
        await proxy.cut()


# --- engine level ---------------------------------------------------------------------------------------


async def test_tfserving_peer_killed_then_restarted(tf_models: Path, world_rows: np.ndarray) -> None:
    """A crashed server is EngineUnavailable (fast, not a timeout); the same engine recovers once it is back."""
    with start_tfserving_peer({MODEL: tf_models}) as peer:
        port = peer.port
        async with started(TFServingEngine("tfs", peer.url, MODEL, startup_timeout_s=5.0)) as tfs:
            assert await _call(tfs, MODEL, world_rows[:4])
            peer.kill()
            began = time.monotonic()
            with pytest.raises(EngineUnavailable, match="UNAVAILABLE"):
                await _call(tfs, MODEL, world_rows[:4], timeout_s=5.0)
            assert time.monotonic() - began < 2.0, "a down target must fail fast, not wait out the timeout"
            with start_tfserving_peer({MODEL: tf_models}, port=port):
                # gRPC reconnects with backoff (capped at 2 s by the engine): poll, bounded.
                deadline = time.monotonic() + 10.0
                while True:
                    try:
                        assert await _call(tfs, MODEL, world_rows[:4], timeout_s=1.0)
                        break
                    except EngineUnavailable:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.1)


@pytest.mark.parametrize("backend", ["tfserving", "triton"])
async def test_target_down(
    backend: str, tfserving_peer: TFServingPeer, triton_peer: TritonPeer, world_rows: np.ndarray
) -> None:
    port = tfserving_peer.port if backend == "tfserving" else triton_peer.grpc_port
    async with _proxied(port) as proxy:
        config = (
            tfserving_config(tfserving_peer).model_copy(update={"url": proxy.url})
            if backend == "tfserving"
            else triton_config(triton_peer, url=proxy.url)
        )
        async with started(_build(config)) as engine:
            assert await _call(engine, RANKER, world_rows[:4])
            await proxy.cut()
            with pytest.raises(EngineUnavailable):
                await _call(engine, RANKER, world_rows[:4])


@pytest.mark.parametrize("backend", ["tfserving", "triton"])
async def test_target_slow(
    backend: str, tfserving_peer: TFServingPeer, triton_peer: TritonPeer, world_rows: np.ndarray
) -> None:
    model = TF_SLOW if backend == "tfserving" else triton_peer.slow_model
    config = tfserving_config(tfserving_peer, model) if backend == "tfserving" else triton_config(triton_peer, model)
    async with started(_build(config)) as engine:
        began = time.monotonic()
        with pytest.raises(EngineTimeout, match="DEADLINE_EXCEEDED"):
            await _call(engine, model, world_rows[:4], timeout_s=SLOW_TIMEOUT_S)
        elapsed = time.monotonic() - began
    assert SLOW_TIMEOUT_S <= elapsed < SLOW_TIMEOUT_S + 0.5 < TF_SLOW_S


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("shape", r"shape \(4, 3\); model expects \(-1, 4\)"),
        ("dtype", "dtype float64; model expects float32"),
        ("size", "needs 64 bytes, got 32"),
        ("missing", "output 'scores' missing"),
        ("nan", "non-finite"),
    ],
)
async def test_tfserving_malformed_answers_are_bad_output(
    tfserving_peer: TFServingPeer, world_rows: np.ndarray, kind: str, message: str
) -> None:
    model = TF_MALFORMED[kind]
    async with started(_build(tfserving_config(tfserving_peer, model))) as engine:
        with pytest.raises(BadOutput, match=message):
            await _call(engine, model, world_rows[:4])


async def test_triton_malformed_answer_is_bad_output(triton_peer: TritonPeer, world_rows: np.ndarray) -> None:
    async with started(_build(triton_config(triton_peer, triton_peer.malformed_model))) as engine:
        with pytest.raises(BadOutput, match=r"shape \(4, 3\); model expects \(-1, 4\)"):
            await _call(engine, triton_peer.malformed_model, world_rows[:4])


# --- route level: the feed falls back to the in-process ranker, degraded, and metrics say so -------------


async def _metrics(port: int | None) -> str:
    assert port is not None
    url = f"http://127.0.0.1:{port}/metrics"
    return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())


Scenario = Callable[[TFServingPeer, TritonPeer, TcpProxy], tuple[str, TritonEngineConfig | TFServingEngineConfig]]

# name -> (the failing target's model and engine config, the outcome label its calls get in metrics)
SCENARIOS: dict[str, tuple[Scenario, str]] = {
    "tfserving-down": (
        lambda tfs, triton, proxy: (RANKER, tfserving_config(tfs).model_copy(update={"url": proxy.url})),
        "unavailable",
    ),
    "tfserving-slow": (lambda tfs, triton, proxy: (TF_SLOW, tfserving_config(tfs, TF_SLOW)), "timeout"),
    "tfserving-malformed": (
        lambda tfs, triton, proxy: (TF_MALFORMED["shape"], tfserving_config(tfs, TF_MALFORMED["shape"])),
        "bad_output",
    ),
    "triton-down": (lambda tfs, triton, proxy: (RANKER, triton_config(triton, url=proxy.url)), "unavailable"),
    "triton-slow": (
        lambda tfs, triton, proxy: (triton.slow_model, triton_config(triton, triton.slow_model)),
        "timeout",
    ),
    "triton-malformed": (
        lambda tfs, triton, proxy: (triton.malformed_model, triton_config(triton, triton.malformed_model)),
        "bad_output",
    ),
}


@pytest.fixture(scope="module")
async def healthy_feeds(small_world: Path) -> dict[int, feed_pb2.GetFeedResponse]:
    """What the members get when the route names the in-process ranker alone."""
    healthy = federated_engines(small_world, RouteConfig(targets=[target("local_onnx")]), {})
    async with gateway_on(small_world, healthy) as gateway:
        return {m: await gateway.stub.GetFeed(feed_pb2.GetFeedRequest(member_id=m), timeout=10) for m in MEMBERS}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_route_falls_back_to_the_in_process_ranker(
    scenario: str,
    small_world: Path,
    tfserving_peer: TFServingPeer,
    triton_peer: TritonPeer,
    healthy_feeds: dict[int, feed_pb2.GetFeedResponse],
) -> None:
    make, outcome = SCENARIOS[scenario]
    backend = scenario.split("-")[0]
    async with _proxied(tfserving_peer.port if backend == "tfserving" else triton_peer.grpc_port) as proxy:
        model, config = make(tfserving_peer, triton_peer, proxy)
        route = RouteConfig(
            # No breaker: every call must reach the failing target, so each one shows its own error.
            targets=[target("remote", model, timeout_s=0.05, breaker=None)],
            fallback=[target("local_onnx")],
        )
        async with gateway_on(small_world, federated_engines(small_world, route, {"remote": config})) as gateway:
            if scenario.endswith("down"):
                await proxy.cut()
            for member in MEMBERS:
                response = await gateway.stub.GetFeed(feed_pb2.GetFeedRequest(member_id=member), timeout=10)
                assert response.degraded
                assert "rank: dependency" in response.degraded_reasons
                used = {m.model: m.target for m in response.model_versions}
                assert used[RANKER] == f"local_onnx/{RANKER}", "answered by the fallback"
                assert [i.item_id for i in response.items] == [i.item_id for i in healthy_feeds[member].items]
            body = await _metrics(gateway.server.metrics_port)
    n = f"{len(MEMBERS)}.0"
    label = f"remote/{model}"
    assert f'quasar_engine_requests_total{{model="{RANKER}",outcome="{outcome}",target="{label}"}} {n}' in body
    assert f'quasar_engine_requests_total{{model="{RANKER}",outcome="ok",target="local_onnx/{RANKER}"}} {n}' in body
    assert f'quasar_engine_fallbacks_total{{from_target="{label}",model="{RANKER}"}} {n}' in body
    assert f'quasar_degraded_total{{step="rank",workflow="feed"}} {n}' in body
