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

from quasar.demo.layout import DENSE_FEATURES, OBJECTIVES, RANKER_INPUT, RANKER_OUTPUT

F32 = npt.NDArray[np.float32]

OPSET = 17
IR_VERSION = 8  # the IR of opset 17, so older ONNX Runtime builds (Triton's) load the file too


class ParityError(AssertionError):
    """Two implementations of the ranker disagree beyond tolerance: the export is wrong."""


MEMBER_ID, ITEM_ID, AUTHOR_ID, HASHTAG_IDS, DENSE = "member_id", "item_id", "author_id", "hashtag_ids", "dense"
WHOLE_MODEL_INPUTS: tuple[str, ...] = (MEMBER_ID, ITEM_ID, AUTHOR_ID, HASHTAG_IDS, DENSE)
"""Inputs of the whole model (see `build_whole_model_onnx`)."""


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


# Tables of the whole model: weights name -> whether row 0 is an id. Member, item
# and author ids start at 1: row 0 is zeroed so that id 0 reads as missing, as in the key-value store.
_WHOLE_TABLES = {
    "embedding_member": False,
    "embedding_item": False,
    "embedding_author": False,
    "embedding_hashtag": True,
}


def build_whole_model_onnx(
    weights: Mapping[str, F32],
    *,
    version: str,
    embedding_dim: int,
    objectives: Sequence[str] = OBJECTIVES,
) -> onnx.ModelProto:
    """The whole ranker, embedding tables inside (whole-model mode): raw ids in, probabilities out.

    Inputs are `WHOLE_MODEL_INPUTS`: int64 [n] member, item and author ids, int64 [n, T] hashtag ids padded
    with -1, float32 [n, k] dense features. Each id gathers its table row; an id outside the table (or id 0
    of member/item/author, not an id) gives a zero vector, as a missing id does in two-stage mode. Hashtag
    vectors are mean-pooled over the ids >= 0 (an item without hashtags pools to zeros). The rows then go
    through the same dense graph as `build_ranker_onnx`, so both modes compute the same function of the
    same weights.
    """
    model = build_ranker_onnx(weights, version=version, embedding_dim=embedding_dim, objectives=objectives)
    graph = model.graph
    initializers: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    zero, last_axis, axis_1 = (
        const("zero_id", np.array(0, np.int64)),
        const("last_axis", np.array([-1], np.int64)),
        const("axis_1", np.array([1], np.int64)),
    )
    one = const("one", np.array(1.0, np.float32))

    def gather(table: str, ids: str) -> str:
        """Rows of `table` for `ids` (any shape): zeros where an id is outside the table."""
        rows = np.ascontiguousarray(weights[table], dtype=np.float32).copy()
        if not _WHOLE_TABLES[table]:
            rows[0] = 0.0
        const(table, rows)
        size = const(f"{table}_rows", np.array(len(rows), np.int64))
        valid = node(
            "And",
            [node("GreaterOrEqual", [ids, zero], f"{ids}_ge0"), node("Less", [ids, size], f"{ids}_lt_{table}")],
            f"{ids}_valid",
        )
        safe = node("Where", [valid, ids, zero], f"{ids}_safe")
        found = node(
            "Cast", [node("Unsqueeze", [valid, last_axis], f"{ids}_valid_col")], f"{ids}_found", to=TensorProto.FLOAT
        )
        return node("Mul", [node("Gather", [table, safe], f"{ids}_rows", axis=0), found], f"{ids}_vectors")

    member = gather("embedding_member", MEMBER_ID)
    item = gather("embedding_item", ITEM_ID)
    author = gather("embedding_author", AUTHOR_ID)
    tags = gather("embedding_hashtag", HASHTAG_IDS)  # [n, width, dim]
    hashtag_mask = node("Cast", [f"{HASHTAG_IDS}_ge0"], "hashtag_mask", to=TensorProto.FLOAT)
    mask = node("Unsqueeze", [hashtag_mask, last_axis], "hashtag_mask_col")
    summed = node("ReduceSum", [node("Mul", [tags, mask], "hashtags_masked"), axis_1], "hashtags_sum", keepdims=0)
    count = node("Max", [node("ReduceSum", [hashtag_mask, axis_1], "hashtags_count", keepdims=1), one], "hashtags_n")
    pooled = node("Div", [summed, count], "hashtags_pooled")
    node("Concat", [member, item, author, pooled, DENSE], RANKER_INPUT, axis=1)

    width = int(weights["input_scale"].shape[0])
    ids_inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["N"]) for name in (MEMBER_ID, ITEM_ID, AUTHOR_ID)
    ]
    inputs = [
        *ids_inputs,
        helper.make_tensor_value_info(HASHTAG_IDS, TensorProto.INT64, ["N", "T"]),
        helper.make_tensor_value_info(DENSE, TensorProto.FLOAT, ["N", width - 4 * embedding_dim]),
    ]
    whole = helper.make_graph(
        [*nodes, *graph.node],
        "quasar_ranker_whole",
        inputs,
        list(graph.output),
        initializer=[*initializers, *graph.initializer],
    )
    out = helper.make_model(
        whole,
        producer_name="quasar.demo",
        doc_string="Quasar feed ranker, whole model: embedding tables + DCN-v2 cross network + deep tower",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    out.ir_version = IR_VERSION
    props = {entry.key: entry.value for entry in model.metadata_props}
    props.update({"mode": "whole", "pool": "mean", "inputs": json.dumps([i.name for i in inputs])})
    helper.set_model_props(out, props)
    onnx.checker.check_model(out, full_check=True)
    return out


def run_whole_onnx(path: Path, inputs: Mapping[str, np.ndarray]) -> F32:
    """Scores from ONNX Runtime (CPU, one thread) for a whole model's named inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    (scores,) = session.run([RANKER_OUTPUT], {name: np.ascontiguousarray(v) for name, v in inputs.items()})
    return np.asarray(scores, dtype=np.float32)
