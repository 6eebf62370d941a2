"""The ranker's dense part as a TensorFlow SavedModel, built from the same `ranker_weights.npz` as the ONNX
graph (see `quasar.demo.onnx_export`), so every backend computes `dense_forward` and parity holds by
construction.

Layout: `<out_dir>/<version>/saved_model.pb` (+ `variables/`), the versioned layout TF Serving loads.
Signature `serving_default`: input `RANKER_INPUT` float32 [-1, ranker_input_dim] -> output `RANKER_OUTPUT`
float32 [-1, len(objectives)] (sigmoid probabilities).

TensorFlow is imported only inside these functions: the demo and the gateway never need it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from quasar.demo.layout import RANKER_INPUT, RANKER_OUTPUT
from quasar.demo.onnx_export import F32, check_parity, dense_forward

SIGNATURE = "serving_default"
PARITY_ROWS = 64


def _layers(weights: Mapping[str, F32], prefix: str) -> int:
    n = 0
    while f"{prefix}{n}_weight" in weights:
        n += 1
    return n


def _module(weights: Mapping[str, F32]) -> Any:
    """A `tf.Module` whose `serve` is the dense forward pass; weights are (frozen) variables."""
    import tensorflow as tf

    width = int(weights["input_scale"].shape[0])
    n_cross, n_deep = _layers(weights, "cross"), _layers(weights, "deep")

    class DenseRanker(tf.Module):  # type: ignore[misc]  # tensorflow is untyped
        def __init__(self) -> None:
            super().__init__(name="quasar_ranker_dense")
            self.w = {
                name: tf.Variable(np.ascontiguousarray(value, dtype=np.float32), trainable=False, name=name)
                for name, value in weights.items()
                if not name.startswith("embedding_")
            }

        @tf.function(input_signature=[tf.TensorSpec([None, width], tf.float32, name=RANKER_INPUT)])  # type: ignore[untyped-decorator]
        def serve(self, features: Any) -> dict[str, Any]:
            w = self.w
            x0 = features * w["input_scale"] + w["input_shift"]
            xl = x0
            for i in range(n_cross):
                xl = x0 * (tf.matmul(xl, w[f"cross{i}_weight"], transpose_b=True) + w[f"cross{i}_bias"]) + xl
            h = x0
            for i in range(n_deep):
                h = tf.nn.relu(tf.matmul(h, w[f"deep{i}_weight"], transpose_b=True) + w[f"deep{i}_bias"])
            logits = tf.matmul(tf.concat([xl, h], axis=1), w["head_weight"], transpose_b=True) + w["head_bias"]
            return {RANKER_OUTPUT: tf.sigmoid(logits)}

    return DenseRanker()


def export_saved_model(weights_npz: Path, out_dir: Path, version: int) -> Path:
    """Write the SavedModel for `version` under `out_dir` and return its directory (`out_dir/version`).

    The export is loaded back and checked against `dense_forward` on random rows before it is moved
    into place (`ParityError` above 1e-5), so a half-written or wrong version is never visible.
    """
    if version <= 0:
        raise ValueError(f"TF Serving versions are positive integers, got {version}")
    import tensorflow as tf

    with np.load(weights_npz) as npz:
        weights = {name: np.asarray(npz[name], dtype=np.float32) for name in npz.files}
    module = _module(weights)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / str(version)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=out_dir))
    try:
        tf.saved_model.save(module, str(staging), signatures={SIGNATURE: module.serve})
        rows = np.random.default_rng(version).normal(size=(PARITY_ROWS, weights["input_scale"].shape[0]))
        x = rows.astype(np.float32)
        served = tf.saved_model.load(str(staging)).signatures[SIGNATURE](**{RANKER_INPUT: tf.constant(x)})
        check_parity({"saved_model": served[RANKER_OUTPUT].numpy(), "numpy": dense_forward(weights, x)})
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
