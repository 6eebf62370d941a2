from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engines.base import Models
from engines.errors import EngineTimeout, EngineUnavailable, ModelNotFound
from engines.fake import FakeEngine, FakeModels
from engines.types import ModelRef, Tensors

X = {"features": np.arange(6, dtype=np.float32).reshape(3, 2)}


def double(inputs: Tensors) -> dict[str, np.ndarray]:
    return {"score": inputs["features"].sum(axis=1) * 2}


async def triple(inputs: Tensors) -> dict[str, np.ndarray]:
    return {"score": inputs["features"].sum(axis=1) * 3}


async def test_fake_models_answers_with_sync_and_async_functions_and_records_calls() -> None:
    models = FakeModels({"double": double, "triple": triple})
    assert isinstance(models, Models)
    call = await models.infer("double", X, timeout_s=0.5, routing_key=9)
    np.testing.assert_array_equal(call.outputs["score"], [2, 10, 18])
    assert (call.target, call.version, call.degraded_reason) == ("fake/double", "fake", None)
    np.testing.assert_array_equal(
        (await models.infer("triple", X, timeout_s=None, routing_key=1)).outputs["score"], [3, 15, 27]
    )
    assert [(c.model, c.timeout_s, c.routing_key) for c in models.calls] == [("double", 0.5, 9), ("triple", None, 1)]


async def test_fake_models_hooks() -> None:
    models = FakeModels({"double": double, "triple": triple})
    with pytest.raises(ModelNotFound, match="'nope'"):
        await models.infer("nope", X, timeout_s=None, routing_key=1)

    models.fail_with(EngineUnavailable("down"), model="double")
    with pytest.raises(EngineUnavailable):
        await models.infer("double", X, timeout_s=None, routing_key=1)
    assert (await models.infer("triple", X, timeout_s=None, routing_key=1)).outputs
    models.fail_with(None, model="double")

    models.degrade("fell back")
    assert (await models.infer("double", X, timeout_s=None, routing_key=1)).degraded_reason == "fell back"
    models.degrade(None)

    gate = asyncio.Event()
    models.block_until(gate)
    with pytest.raises(EngineTimeout):
        await models.infer("double", X, timeout_s=0.01, routing_key=1)
    blocked = asyncio.create_task(models.infer("double", X, timeout_s=None, routing_key=1))
    await models.entered.wait()
    gate.set()
    assert (await blocked).degraded_reason is None


async def test_fake_engine_scripted_outputs_are_copies() -> None:
    engine = FakeEngine("e", {"m": {"y": np.zeros(2, dtype=np.float32)}})
    await engine.start()
    first = await engine.infer(ModelRef("m"), X)
    first["y"][0] = 5
    assert (await engine.infer(ModelRef("m"), X))["y"][0] == 0
    with pytest.raises(ModelNotFound, match=r"serving \['m'\]"):
        await engine.infer(ModelRef("other"), X)
    assert [call.model for call in engine.calls] == ["m", "m"]
