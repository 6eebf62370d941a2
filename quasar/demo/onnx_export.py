"""The ranker's dense part as an ONNX graph, built op by op from its numpy weights.

The graph is written with `onnx.helper` rather than a converter, so that every exporter (this one, a TF
SavedModel later) computes the same function from the same `ranker_weights.npz` and parity holds by
construction. `dense_forward` is that function in numpy, the reference every export is checked against.

Graph: input `RANKER_INPUT` float32 [N, ranker_input_dim] (raw, layout of
`remix.feature_spec.ranker_input`), output `RANKER_OUTPUT` float32 [N, len(objectives)] (sigmoid
probabilities). Metadata: version, objectives (JSON list), embedding_dim, dense_features (JSON list),
input and output names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from remix.feature_spec import DENSE_FEATURES, OBJECTIVES, RANKER_INPUT, RANKER_OUTPUT

F32 = npt.NDArray[np.float32]

OPSET = 17
IR_VERSION = 8  # the IR of opset 17, so older ONNX Runtime builds (Triton's) load the file too


class ParityError(AssertionError):
    """Two implementations of the ranker disagree beyond tolerance: the export is wrong."""


def _count(weights: Mapping[str, F32], prefix: str) -> int:
    n = 0
    while f"{prefix}{n}_weight" in weights:
        n += 1
    return n


def dense_forward(weights: Mapping[str, F32], x: F32) -> F32:
    """The dense part in float32 numpy: raw input rows (n, ranker_input_dim) → probabilities (n, k)."""
    x = np.asarray(x, dtype=np.float32)
    x0 = x * weights["input_scale"] + weights["input_shift"]
    xl = x0
    for i in range(_count(weights, "cross")):
        xl = x0 * (xl @ weights[f"cross{i}_weight"].T + weights[f"cross{i}_bias"]) + xl
    h = x0
    for i in range(_count(weights, "deep")):
        h = np.maximum(h @ weights[f"deep{i}_weight"].T + weights[f"deep{i}_bias"], np.float32(0))
    logits = np.concatenate([xl, h], axis=1) @ weights["head_weight"].T + weights["head_bias"]
    return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float32)


def build_ranker_onnx(
    weights: Mapping[str, F32],
    *,
    version: str,
    embedding_dim: int,
    objectives: Sequence[str] = OBJECTIVES,
) -> onnx.ModelProto:
    """The dense part as an ONNX model (opset 17); raises if onnx.checker rejects it."""
    width = int(weights["input_scale"].shape[0])
    initializers: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(weights[name], dtype=np.float32), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def gemm(x: str, layer: str, output: str) -> str:
        return node("Gemm", [x, const(f"{layer}_weight"), const(f"{layer}_bias")], output, transB=1)

    scaled = node("Mul", [RANKER_INPUT, const("input_scale")], "scaled")
    x0 = node("Add", [scaled, const("input_shift")], "x0")
    xl = x0
    for i in range(_count(weights, "cross")):
        projected = gemm(xl, f"cross{i}", f"cross{i}_proj")
        xl = node("Add", [node("Mul", [x0, projected], f"cross{i}_gate"), xl], f"cross{i}_out")
    h = x0
    for i in range(_count(weights, "deep")):
        h = node("Relu", [gemm(h, f"deep{i}", f"deep{i}_linear")], f"deep{i}_out")
    joined = node("Concat", [xl, h], "joined", axis=1)
    logits = gemm(joined, "head", "logits")
    node("Sigmoid", [logits], RANKER_OUTPUT)

    graph = helper.make_graph(
        nodes,
        "quasar_ranker_dense",
        [helper.make_tensor_value_info(RANKER_INPUT, TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(RANKER_OUTPUT, TensorProto.FLOAT, ["N", len(objectives)])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="quasar.demo",
        doc_string="Quasar feed ranker, dense part (two-stage mode): DCN-v2 cross network + deep tower",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "version": version,
            "objectives": json.dumps(list(objectives)),
            "embedding_dim": str(embedding_dim),
            "dense_features": json.dumps(list(DENSE_FEATURES)),
            "input": RANKER_INPUT,
            "output": RANKER_OUTPUT,
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def save_ranker_onnx(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def run_onnx(path: Path, x: F32) -> F32:
    """Scores from ONNX Runtime (CPU, one thread) for raw input rows."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    (scores,) = session.run([RANKER_OUTPUT], {RANKER_INPUT: np.ascontiguousarray(x, dtype=np.float32)})
    return np.asarray(scores, dtype=np.float32)


def check_parity(results: Mapping[str, F32], *, tolerance: float = 1e-5) -> float:
    """The largest pairwise max-abs difference between implementations; ParityError above `tolerance`."""
    names = list(results)
    worst = 0.0
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if results[a].shape != results[b].shape:
                raise ParityError(f"{a} gives shape {results[a].shape}, {b} gives {results[b].shape}")
            diff = float(np.max(np.abs(results[a] - results[b]), initial=0.0))
            if not diff <= tolerance:
                raise ParityError(f"{a} and {b} differ by {diff:.3g} > {tolerance:.1g}")
            worst = max(worst, diff)
    return worst
