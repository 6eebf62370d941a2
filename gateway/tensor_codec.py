"""Open Inference Protocol tensors <-> numpy, for the gateway's inference endpoint.

Requests come as `raw_input_contents` (what tritonclient and perf_analyzer send: little endian, one entry
per input) or as typed `contents`; responses always go out as `raw_output_contents`. Every malformed
input raises `RequestRejected(INVALID_ARGUMENT)` naming the input and the rule, whatever the client sent:
absurd shapes, unknown datatypes, byte counts that do not match, out-of-range typed values, NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2, service_pb2

from engines.oip_datatypes import DATATYPE_OF, DATATYPE_OF_NAME, LITTLE_ENDIAN, NATIVE
from engines.types import TensorSpec
from gateway.status import invalid_argument

_MAX_RANK = 32  # numpy's own limit is 64; no model takes more than a handful
# Bound on the product of a shape's non-zero dimensions: numpy refuses to even describe an empty array
# whose nominal size overflows, and no request that fits in a message comes anywhere near this.
_MAX_NOMINAL_ELEMENTS = 1 << 40

# The typed `InferTensorContents` field of each datatype, and the numpy type its values arrive in.
_TYPED_FIELD: dict[str, tuple[str, np.dtype[Any]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
}


def decode_inputs(request: Any) -> dict[str, np.ndarray]:
    """Named arrays from a ModelInferRequest, without per-element copies for raw contents.

    Raw arrays are read-only views of the request's bytes (engines never write to their inputs).
    Raises `RequestRejected(INVALID_ARGUMENT)` for anything malformed.
    """
    raw = request.raw_input_contents
    tensors = request.inputs
    if raw and len(raw) != len(tensors):
        raise invalid_argument(f"{len(raw)} raw_input_contents for {len(tensors)} inputs: give one per input")
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(tensors):
        name, datatype = tensor.name, tensor.datatype  # each read of a protobuf field builds a new str
        if name in inputs:
            raise invalid_argument(f"input {name!r} is given twice")
        if tensor.parameters and any(key.startswith("shared_memory") for key in tensor.parameters):
            raise invalid_argument(f"input {name!r}: shared memory is not supported; send the data")
        dtype = NATIVE.get(datatype)
        if dtype is None:
            raise invalid_argument(f"input {name!r} has datatype {datatype!r}; supported: {sorted(NATIVE)}")
        shape, count = _shape(name, tensor.shape)
        array = _raw(name, datatype, raw[index], shape, count) if raw else _typed(tensor, dtype, shape, count)
        # NaN in, NaN out: the engines would refuse the scores as a backend fault (and count it against
        # the target's breaker), so one client's garbage could open a breaker for everyone.
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
            raise invalid_argument(f"input {name!r} holds {bad} non-finite values of {array.size}")
        inputs[name] = array
    return inputs


def _shape(name: str, dims: Any) -> tuple[tuple[int, ...], int]:
    """The shape and its element count, refused when negative, of too many dimensions, or absurdly large."""
    shape = tuple(dims)  # protobuf's int64 dimensions arrive as ints
    if shape and min(shape) < 0:
        raise invalid_argument(f"input {name!r} has shape {list(shape)}: dimensions must be >= 0")
    if len(shape) > _MAX_RANK:
        raise invalid_argument(f"input {name!r} has {len(shape)} dimensions; at most {_MAX_RANK} are supported")
    count = math.prod(shape)
    # An empty shape's nominal size is the product of its non-zero dimensions; any other's is its count.
    nominal = count or math.prod(max(dim, 1) for dim in shape)
    if nominal > _MAX_NOMINAL_ELEMENTS:
        raise invalid_argument(f"input {name!r} has shape {list(shape)}: far larger than any request can carry")
    return shape, count


def _raw(name: str, datatype: str, data: bytes, shape: tuple[int, ...], count: int) -> np.ndarray:
    wire = LITTLE_ENDIAN[datatype]
    if len(data) != count * wire.itemsize:
        raise invalid_argument(
            f"input {name!r}: {len(data)} bytes of raw contents; shape {list(shape)} of "
            f"{datatype} needs {count * wire.itemsize}"
        )
    array: np.ndarray = np.ndarray(shape, wire, data)  # a view of `data`, in one call (frombuffer + reshape is two)
    return array if array.dtype.isnative else array.astype(NATIVE[datatype])


def _typed(tensor: Any, dtype: np.dtype[Any], shape: tuple[int, ...], count: int) -> np.ndarray:
    typed = _TYPED_FIELD.get(tensor.datatype)
    if typed is None:
        raise invalid_argument(f"input {tensor.name!r}: {tensor.datatype} data must come as raw contents")
    field, wire_dtype = typed
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise invalid_argument(
            f"input {tensor.name!r}: {len(values)} values in contents.{field}; shape {list(shape)} needs {count}"
        )
    array = np.asarray(values, dtype=wire_dtype)
    if wire_dtype != dtype and dtype.kind in "iu" and array.size:
        # uint_contents/int_contents carry 32-bit values for 8- and 16-bit tensors: never wrap them silently
        limits = np.iinfo(dtype)
        if int(array.min()) < limits.min or int(array.max()) > limits.max:
            raise invalid_argument(
                f"input {tensor.name!r}: contents.{field} holds values outside {tensor.datatype}'s range "
                f"[{limits.min}, {limits.max}]"
            )
    return array.astype(dtype, copy=False).reshape(shape)


def requested_outputs(request: Any) -> list[str]:
    """Names of the outputs asked for (empty: all). Shared memory and classification are refused."""
    names = []
    for output in request.outputs:
        unsupported = sorted(
            key for key in output.parameters if key.startswith("shared_memory") or key == "classification"
        )
        if unsupported:
            raise invalid_argument(f"output {output.name!r}: parameters {unsupported} are not supported")
        names.append(output.name)
    return names


def encode_outputs(outputs: Mapping[str, np.ndarray], requested: list[str], response: Any) -> None:
    """Add the requested outputs (all, in the model's order, when none is named) to `response` as
    little-endian raw contents. An unknown requested name raises `RequestRejected(INVALID_ARGUMENT)`."""
    unknown = [name for name in requested if name not in outputs]
    if unknown:
        raise invalid_argument(f"requested outputs {unknown} do not exist; outputs: {list(outputs)}")
    for name in requested or list(outputs):
        array = outputs[name]
        native = array.dtype if array.dtype.isnative else array.dtype.newbyteorder("=")
        datatype = DATATYPE_OF.get(native)
        if datatype is None:  # our engines answer numeric tensors only: a bug, not the client's fault
            raise TypeError(f"output {name!r} has dtype {array.dtype} with no inference-protocol datatype")
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        little = LITTLE_ENDIAN[datatype]
        # tobytes() copies in C order; only a big-endian host needs the conversion first
        response.raw_output_contents.append((array if little == array.dtype else array.astype(little)).tobytes())


def tensor_metadata(spec: TensorSpec) -> Any:
    """A signature tensor as ModelMetadataResponse.TensorMetadata (datatype names as the protocol spells them)."""
    return service_pb2.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=DATATYPE_OF_NAME.get(spec.dtype, spec.dtype.upper()), shape=spec.shape
    )


def config_datatype(spec: TensorSpec) -> int:
    """A signature tensor's model-config DataType (TYPE_INVALID for dtypes the protocol has no name for)."""
    datatype = DATATYPE_OF_NAME.get(spec.dtype)
    return int(model_config_pb2.DataType.Value(f"TYPE_{datatype}")) if datatype else model_config_pb2.TYPE_INVALID
