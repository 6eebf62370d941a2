"""Tiny real models built in tests (an ONNX MLP, an XGBoost booster) and their reference answers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import xgboost as xgb
from onnx import TensorProto, helper, numpy_helper

from engines._offload import Offloader
from engines.types import ModelMetadata, TensorSpec

N_FEATURES = 8
N_SCORES = 4

MLP_METADATA = ModelMetadata(
    name="mlp",
    version="7",
    inputs=(TensorSpec("features", "float32", (-1, N_FEATURES)),),
    outputs=(TensorSpec("scores", "float32", (-1, N_SCORES)),),
)


@dataclass(frozen=True)
class Mlp:
    """features [n, 8] -> sigmoid(relu(x @ w1 + b1) @ w2 + b2) [n, 4]."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @classmethod
    def random(cls, seed: int = 0, hidden: int = 16) -> Mlp:
        rng = np.random.default_rng(seed)

        def draw(*shape: int) -> np.ndarray:
            return rng.normal(0.0, 0.5, size=shape).astype(np.float32)

        return cls(draw(N_FEATURES, hidden), draw(hidden), draw(hidden, N_SCORES), draw(N_SCORES))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        hidden = np.maximum(x @ self.w1 + self.b1, 0.0)
        logits: np.ndarray = hidden @ self.w2 + self.b2
        scores: np.ndarray = 1.0 / (1.0 + np.exp(-logits))
        return scores.astype(np.float32)

    def save_onnx(self, path: Path, *, version: str | None = None) -> Path:
        nodes = [
            helper.make_node("MatMul", ["features", "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h2"]),
            helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
            helper.make_node("Add", ["h3", "b2"], ["h4"]),
            helper.make_node("Sigmoid", ["h4"], ["scores"]),
        ]
        weights = [numpy_helper.from_array(getattr(self, n), n) for n in ("w1", "b1", "w2", "b2")]
        graph = helper.make_graph(
            nodes,
            "mlp",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", N_FEATURES])],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", N_SCORES])],
            weights,
        )
        save_onnx(graph, path, version=version)
        return path


def save_onnx(graph: onnx.GraphProto, path: Path, *, version: str | None = None) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # readable by every onnxruntime this project allows
    if version is not None:
        helper.set_model_props(model, {"version": version})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def save_log_model(path: Path) -> Path:
    """y = log(x): answers NaN for negative inputs (for BadOutput tests)."""
    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["y"])],
        "log",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    save_onnx(graph, path)
    return path


def train_booster(path: Path, *, n_features: int = 5, seed: int = 0, version: str | None = None) -> xgb.Booster:
    """A small binary:logistic booster on random data, saved as UBJSON at `path`."""
    rng = np.random.default_rng(seed)
    x = rng.random((200, n_features), dtype=np.float32)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0.6).astype(np.float32)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": seed},
        xgb.DMatrix(x, label=y),
        num_boost_round=8,
    )
    if version is not None:
        booster.set_attr(version=version)
    booster.save_model(str(path))
    return booster


def booster_reference(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(xgb.DMatrix(x)), dtype=np.float32)


@asynccontextmanager
async def occupied(offloader: Offloader) -> AsyncIterator[threading.Event]:
    """Keep one offloader worker busy (waiting on a threading.Event) until the block exits.

    With a single-worker offloader, every call made inside the block queues behind it.
    """
    gate = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(timeout=30)

    task = asyncio.create_task(offloader.run(hold))
    await asyncio.to_thread(started.wait, 30)
    try:
        yield gate
    finally:
        gate.set()
        await task
