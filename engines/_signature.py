"""Checks of tensors against a model's declared signature, shared by the in-process engines.

Both checks are O(number of tensors) in Python plus vectorised numpy work; they never copy a tensor.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from engines.errors import BadInput, BadOutput
from engines.types import ModelMetadata, Tensors, TensorSpec


def check_inputs(meta: ModelMetadata, inputs: Tensors, *, target: str, model: str) -> None:
    """Raise `BadInput` naming the first mismatch: missing or extra names, dtype, rank, fixed dims.

    dtypes must match exactly; nothing is cast silently (a float64 tensor is a caller bug).
    """
    # As many inputs as declared names, each of them there: none missing, none extra. The common case is
    # decided so, without the lists the messages name.
    if len(inputs) != len(meta.inputs) or not all(spec.name in inputs for spec in meta.inputs):
        _check_names(meta, inputs, target=target, model=model)
    for spec in meta.inputs:
        problem = _mismatch("input", spec, inputs[spec.name])
        if problem:
            raise BadInput(problem, target=target, model=model)


def check_outputs(
    meta: ModelMetadata, outputs: Mapping[str, object], *, target: str, model: str
) -> dict[str, np.ndarray]:
    """Return the declared outputs, or raise `BadOutput` if one is missing, mis-typed, mis-shaped or
    holds non-finite floats (a NaN score would silently corrupt any ranking built on it)."""
    checked: dict[str, np.ndarray] = {}
    for spec in meta.outputs:
        if spec.name not in outputs:
            raise BadOutput(
                f"output {spec.name!r} missing; backend returned {sorted(outputs)}", target=target, model=model
            )
        value = outputs[spec.name]
        problem = _mismatch("output", spec, value)
        if problem:
            raise BadOutput(problem, target=target, model=model)
        assert isinstance(value, np.ndarray)  # _mismatch checked it
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            bad = value.size - int(np.count_nonzero(np.isfinite(value)))  # counted only for the message
            raise BadOutput(
                f"output {spec.name!r} holds {bad} non-finite values of {value.size}", target=target, model=model
            )
        checked[spec.name] = value
    return checked


def check_rows(
    meta: ModelMetadata, inputs: Tensors, outputs: dict[str, np.ndarray], *, target: str, model: str
) -> None:
    """A batch model (every input and output declared [-1, ...]) answers one row per input row."""
    specs = meta.inputs + meta.outputs
    if not specs or not all(spec.shape and spec.shape[0] == -1 for spec in specs):
        return
    rows = {inputs[spec.name].shape[0] for spec in meta.inputs}
    if len(rows) != 1:
        return
    (expected,) = rows
    for name, value in outputs.items():
        if value.shape[0] != expected:
            raise BadOutput(
                f"output {name!r} has {value.shape[0]} rows for {expected} input rows", target=target, model=model
            )


def _check_names(meta: ModelMetadata, inputs: Tensors, *, target: str, model: str) -> None:
    expected = [spec.name for spec in meta.inputs]
    missing = [name for name in expected if name not in inputs]
    if missing:
        raise BadInput(f"missing inputs {missing}; model expects {expected}", target=target, model=model)
    extra = sorted(name for name in inputs if name not in expected)
    if extra:
        raise BadInput(f"unexpected inputs {extra}; model expects {expected}", target=target, model=model)


def _mismatch(kind: str, spec: TensorSpec, value: object) -> str | None:
    if not isinstance(value, np.ndarray):
        return f"{kind} {spec.name!r} must be a numpy array, got {type(value).__name__}"
    expected = _numpy_dtype(spec.dtype)  # compared as dtypes: numpy computes `.dtype.name` in Python
    if expected is None or value.dtype != expected:
        return f"{kind} {spec.name!r} has dtype {value.dtype.name}; model expects {spec.dtype}"
    shape = value.shape
    if len(shape) != len(spec.shape):
        return (
            f"{kind} {spec.name!r} has rank {value.ndim} (shape {shape}); "
            f"model expects rank {len(spec.shape)} (shape {spec.shape})"
        )
    for axis, want in enumerate(spec.shape):
        if want >= 0 and shape[axis] != want:
            return (
                f"{kind} {spec.name!r} has shape {shape}; model expects {spec.shape} "
                f"(dimension {axis} must be {want}, got {shape[axis]})"
            )
    return None


@functools.lru_cache(maxsize=64)
def _numpy_dtype(name: str) -> np.dtype[np.generic] | None:
    """The native-order numpy dtype of a declared dtype name; None for names numpy does not know."""
    try:
        return np.dtype(name)
    except TypeError:
        return None
