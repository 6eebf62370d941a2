"""The Triton engine against a real Triton server (PyTriton): startup checks, versions, batching limits,
dynamic batching and PyTriton's access-token restriction."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from engines.errors import BadInput, EngineUnavailable, ModelNotFound
from engines.triton import TritonEngine
from engines.types import ModelRef
from quasar.demo.layout import RANKER_INPUT, RANKER_OUTPUT
from quasar.demo.onnx_export import run_onnx
from tests.integration.federation.conftest import RANKER, started, triton_config
from tests.peers.triton_server import TritonPeer, free_ports


async def pending_requests(peer: TritonPeer, *, at_least: int, timeout_s: float = 10.0) -> None:
    """Poll Triton's `nv_inference_pending_request_count` (bounded) until `at_least` requests wait."""
    pattern = re.compile(rf'^nv_inference_pending_request_count{{[^}}]*model="{RANKER}"[^}}]*}} (\S+)$', re.MULTILINE)
    deadline = asyncio.get_running_loop().time() + timeout_s
    seen = 0.0
    while asyncio.get_running_loop().time() < deadline:
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(peer.metrics_url, timeout=2).read().decode())
        match = pattern.search(body)
        seen = float(match.group(1)) if match else 0.0
        if seen >= at_least:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {seen} requests pending after {timeout_s}s, expected {at_least}")


async def held_execution(peer: TritonPeer, *, timeout_s: float = 10.0) -> None:
    """Poll (bounded) until an execution of the ranker is held inside the server."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not peer.held_execution_started():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no execution of {RANKER} started within {timeout_s}s")
        await asyncio.sleep(0.005)


def engine(peer: TritonPeer, **overrides: object) -> TritonEngine:
    config = triton_config(peer).model_copy(update=overrides)
    built = config.build("triton", None)  # type: ignore[arg-type]  # remote: no offloader
    assert isinstance(built, TritonEngine)
    return built


async def test_metadata_and_answers(triton_peer: TritonPeer, world_rows: np.ndarray, small_world) -> None:  # type: ignore[no-untyped-def]
    async with started(engine(triton_peer)) as triton:
        meta = await triton.metadata(ModelRef(RANKER))
        assert meta.version == "1"
        assert [(s.name, s.dtype, s.shape) for s in meta.inputs] == [(RANKER_INPUT, "float32", (-1, 77))]
        assert [(s.name, s.dtype, s.shape) for s in meta.outputs] == [(RANKER_OUTPUT, "float32", (-1, 4))]
        scores = (await triton.infer(ModelRef(RANKER), {RANKER_INPUT: world_rows}, timeout_s=5.0))[RANKER_OUTPUT]
    expected = run_onnx(small_world / "models" / "ranker.onnx", world_rows)
    np.testing.assert_allclose(scores, expected, atol=1e-6, rtol=0)


async def test_callers_name_can_differ_from_the_triton_name(triton_peer: TritonPeer, world_rows: np.ndarray) -> None:
    async with started(engine(triton_peer, models={"ranker_v1": RANKER})) as triton:
        assert (await triton.metadata(ModelRef("ranker_v1"))).name == "ranker_v1"
        out = await triton.infer(ModelRef("ranker_v1"), {RANKER_INPUT: world_rows[:3]}, timeout_s=5.0)
        assert out[RANKER_OUTPUT].shape == (3, 4)
        with pytest.raises(ModelNotFound):
            await triton.infer(ModelRef(RANKER), {RANKER_INPUT: world_rows[:3]})


async def test_versions(triton_peer: TritonPeer, world_rows: np.ndarray) -> None:
    async with started(engine(triton_peer)) as triton:
        assert await triton.infer(ModelRef(RANKER, "1"), {RANKER_INPUT: world_rows[:2]}, timeout_s=5.0)
        with pytest.raises(ModelNotFound, match="no version '2'"):
            await triton.infer(ModelRef(RANKER, "2"), {RANKER_INPUT: world_rows[:2]}, timeout_s=5.0)


async def test_startup_fails_for_an_unknown_model(triton_peer: TritonPeer) -> None:
    triton = engine(triton_peer, models=["no_such_model"])
    with pytest.raises(ModelNotFound, match="unknown model: 'no_such_model'"):
        await triton.start()
    await triton.close()


async def test_startup_fails_when_nobody_listens() -> None:
    (port,) = free_ports(1)
    triton = TritonEngine("triton", f"127.0.0.1:{port}", {RANKER: RANKER}, startup_timeout_s=2.0)
    with pytest.raises(EngineUnavailable, match="UNAVAILABLE"):
        await triton.start()
    await triton.close()


async def test_batches_beyond_max_batch_size_are_refused_before_sending(triton_peer: TritonPeer) -> None:
    async with started(engine(triton_peer)) as triton:
        with pytest.raises(BadInput, match="exceeds the model's max_batch_size 1024"):
            await triton.infer(ModelRef(RANKER), {RANKER_INPUT: np.zeros((1025, 77), np.float32)}, timeout_s=5.0)


async def test_dynamic_batching_merges_queued_requests(triton_peer: TritonPeer, world_rows: np.ndarray) -> None:
    """Requests queued while the model is busy run as fewer executions, each answered with its own rows."""
    async with started(engine(triton_peer)) as triton:
        stats_client = triton_aio.InferenceServerClient(triton_peer.url_grpc)
        try:
            before = await stats_client.get_inference_statistics(RANKER, headers=triton_peer.grpc_headers)
            chunks = [world_rows[i * 8 : (i + 1) * 8] for i in range(16)]
            calls = []
            try:
                with triton_peer.hold():
                    # One request first, held inside the model: requests sent after it cannot join its batch.
                    calls = [
                        asyncio.create_task(triton.infer(ModelRef(RANKER), {RANKER_INPUT: chunks[0]}, timeout_s=10.0))
                    ]
                    await held_execution(triton_peer)
                    calls += [
                        asyncio.create_task(triton.infer(ModelRef(RANKER), {RANKER_INPUT: c}, timeout_s=10.0))
                        for c in chunks[1:]
                    ]
                    # The other 15 now queue behind the held execution; releasing it must run them together.
                    await pending_requests(triton_peer, at_least=2)
            finally:
                results = await asyncio.gather(*calls, return_exceptions=True)
            # Triton counts a request after it has sent the answer: wait (bounded) until all 16 are counted.
            async with asyncio.timeout(10):
                while True:
                    after = await stats_client.get_inference_statistics(RANKER, headers=triton_peer.grpc_headers)
                    counted = (
                        after.model_stats[0].inference_stats.success.count
                        - before.model_stats[0].inference_stats.success.count
                    )
                    if counted >= len(chunks):
                        break
                    await asyncio.sleep(0.05)  # polling a condition with a deadline, not a timing assumption
        finally:
            await stats_client.close()
    for chunk, result in zip(chunks, results, strict=True):
        assert isinstance(result, dict), result
        assert result[RANKER_OUTPUT].shape == (len(chunk), 4)
    requests = after.model_stats[0].inference_stats.success.count - before.model_stats[0].inference_stats.success.count
    executions = after.model_stats[0].execution_count - before.model_stats[0].execution_count
    assert requests == 16
    assert executions < requests, f"{requests} requests ran as {executions} executions: no dynamic batching"


async def test_restricted_endpoints_need_the_access_token(triton_peer: TritonPeer) -> None:
    """PyTriton keeps statistics (and model-repository, ...) behind a token; the peer's headers open them."""
    assert triton_peer.access_token
    client = triton_aio.InferenceServerClient(triton_peer.url_grpc)
    try:
        with pytest.raises(InferenceServerException):
            await client.get_inference_statistics(RANKER)
        stats = await client.get_inference_statistics(RANKER, headers=triton_peer.grpc_headers)
        assert stats.model_stats[0].name == RANKER
    finally:
        await client.close()
