"""TensorFlow Serving over gRPC (PredictionService, ModelService). The only module that imports
`tensorflow_serving` or TensorFlow's protos.

TensorFlow Serving's protos import TensorFlow's own (`tensorflow.core.framework`), and importing those
loads the whole `tensorflow` package (seconds, hundreds of MB). They are therefore imported in `start()`,
off the event loop, and only by a gateway that configures a TF Serving engine.
"""

from __future__ import annotations

import asyncio
import importlib
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from engines._grpc import engine_error, open_channel
from engines._signature import check_inputs, check_outputs, check_rows
from engines.base import Engine
from engines.errors import (
    BadOutput,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    ModelNotFound,
)
from engines.types import ModelMetadata, ModelRef, Tensors, TensorSpec

if TYPE_CHECKING:
    from engines.tls_config import GrpcTlsConfig

# TF Serving answers an unknown version label with INVALID_ARGUMENT; for us it is a missing model version.
_UNKNOWN_LABEL = "Unrecognized servable version label"

# TensorFlow DataType enum names <-> numpy dtype names (TensorSpec.dtype). Strings are not sent raw.
_NUMPY_BY_DT = {
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_HALF": "float16",
    "DT_INT8": "int8",
    "DT_INT16": "int16",
    "DT_INT32": "int32",
    "DT_INT64": "int64",
    "DT_UINT8": "uint8",
    "DT_UINT16": "uint16",
    "DT_UINT32": "uint32",
    "DT_UINT64": "uint64",
    "DT_BOOL": "bool",
}
_DT_BY_NUMPY = {numpy: dt for dt, numpy in _NUMPY_BY_DT.items()}
# The repeated field a TensorProto uses when a server answers per element instead of tensor_content.
_VALUE_FIELD = {
    "float32": "float_val",
    "float64": "double_val",
    "int8": "int_val",
    "int16": "int_val",
    "int32": "int_val",
    "uint8": "int_val",
    "uint16": "int_val",
    "int64": "int64_val",
    "uint32": "uint32_val",
    "uint64": "uint64_val",
    "bool": "bool_val",
}

_PROTO_MODULES = {
    "predict": "tensorflow_serving.apis.predict_pb2",
    "metadata": "tensorflow_serving.apis.get_model_metadata_pb2",
    "status": "tensorflow_serving.apis.get_model_status_pb2",
    "model": "tensorflow_serving.apis.model_pb2",
    "prediction_grpc": "tensorflow_serving.apis.prediction_service_pb2_grpc",
    "model_grpc": "tensorflow_serving.apis.model_service_pb2_grpc",
    "tensor": "tensorflow.core.framework.tensor_pb2",
    "shape": "tensorflow.core.framework.tensor_shape_pb2",
    "types": "tensorflow.core.framework.types_pb2",
}


def _load_protos() -> SimpleNamespace:
    return SimpleNamespace(**{key: importlib.import_module(module) for key, module in _PROTO_MODULES.items()})


@dataclass(frozen=True)
class _Spec:
    """Which servable a call asks for: a version number, a version label, or (both None) the latest."""

    version: int | None = None
    label: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return str(self.version)
        return f"label:{self.label}" if self.label is not None else "latest"


class TFServingEngine:
    """One TensorFlow Serving model (`model_name`, signature `signature_name`) at `url` (host:port).

    Versions: a `ModelRef` with no version gets the engine's default (`version`, else `version_label`, else
    the server's latest); a numeric `ModelRef.version` is a version number, any other a version label.
    The reported `ModelMetadata.version` is the number the server resolved. `start()` checks that the
    server has an AVAILABLE version and that the signature exists with named, fixed-rank, numeric inputs
    and outputs; any mismatch fails startup with a message naming it. Inputs are checked against that
    signature before a request is sent (`BadInput`), answers after (`BadOutput`: missing, mis-sized,
    mis-typed, mis-shaped, non-finite, or a batch model answering a different number of rows).

    Tensors travel as `tensor_content` bytes both ways (outputs are read-only views of the reply); a server
    answering with per-element `*_val` fields is decoded too (slower). One channel for the engine's lifetime.
    gRPC status -> error: UNAVAILABLE -> EngineUnavailable, DEADLINE_EXCEEDED -> EngineTimeout, NOT_FOUND
    (and an unknown version label) -> ModelNotFound, INVALID_ARGUMENT -> BadInput, RESOURCE_EXHAUSTED ->
    EngineOverloaded, anything else -> EngineError.
    """

    def __init__(
        self,
        name: str,
        url: str,
        model_name: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = "serving_default",
        startup_timeout_s: float = 10.0,
        tls: GrpcTlsConfig | None = None,
    ) -> None:
        if version is not None and version_label is not None:
            raise ValueError("give a version or a version_label, not both")
        self.name = name
        self.url = url
        self.model_name = model_name
        self.signature_name = signature_name
        self._default = _Spec(version=version, label=version_label)
        self._startup_timeout_s = startup_timeout_s
        self._tls = tls
        self._protos: Any = None
        self._channel: grpc.aio.Channel | None = None
        self._predict_stub: Any = None
        self._model_stub: Any = None
        self._metadata: dict[_Spec, ModelMetadata] = {}
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Import the protos, open the channel, check the model's status and signature."""
        self._protos = await asyncio.to_thread(_load_protos)
        self._channel = open_channel(self.url, self._tls, engine=self.name)
        self._predict_stub = self._protos.prediction_grpc.PredictionServiceStub(self._channel)
        self._model_stub = self._protos.model_grpc.ModelServiceStub(self._channel)
        where = {"target": self.name, "model": self.model_name}
        request = self._protos.status.GetModelStatusRequest(model_spec=self._model_spec(self._default))
        reply = await self._call(self._model_stub.GetModelStatus, request, self._startup_timeout_s, **where)
        available = self._protos.status.ModelVersionStatus.AVAILABLE
        if not any(status.state == available for status in reply.model_version_status):
            states = {status.version: status.state for status in reply.model_version_status}
            raise EngineUnavailable(f"no version of {self.model_name} is AVAILABLE at {self.url}: {states}", **where)
        self._metadata[self._default] = await self._fetch_metadata(self._default, self._startup_timeout_s)
        self._started = True

    async def ready(self) -> bool:
        return self._started and not self._closed

    async def metadata(self, model: ModelRef) -> ModelMetadata:
        spec = self._spec(model)
        return self._metadata.get(spec) or await self._fetch_metadata(spec, self._startup_timeout_s)

    async def infer(self, model: ModelRef, inputs: Tensors, *, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        where = {"target": self.name, "model": str(model)}
        if timeout_s is not None and timeout_s <= 0:
            raise EngineTimeout("no time left for the call", **where)
        spec = self._spec(model)
        meta = self._metadata.get(spec)
        if meta is None:  # a version first asked for now: its signature comes out of the same budget
            loop = asyncio.get_running_loop()
            started = loop.time()
            meta = await self._fetch_metadata(spec, timeout_s)
            if timeout_s is not None:
                timeout_s -= loop.time() - started
                if timeout_s <= 0:
                    raise EngineTimeout("no time left after fetching the signature", **where)
        check_inputs(meta, inputs, **where)
        request = self._protos.predict.PredictRequest(
            model_spec=self._model_spec(spec),
            inputs={name: self._tensor_proto(value) for name, value in inputs.items()},
        )
        reply = await self._call(self._predict_stub.Predict, request, timeout_s, **where)
        outputs = {
            spec.name: self._array(spec.name, reply.outputs[spec.name], **where)
            for spec in meta.outputs
            if spec.name in reply.outputs
        }
        checked = check_outputs(meta, outputs, **where)
        check_rows(meta, inputs, checked, **where)
        return checked

    async def close(self) -> None:
        """Close the channel; calls in flight fail with EngineUnavailable (cancelled RPCs)."""
        self._closed = True
        self._metadata.clear()
        if self._channel is not None:
            await self._channel.close(grace=None)

    # -- requests ----------------------------------------------------------------------------------------

    def _spec(self, model: ModelRef) -> _Spec:
        if self._closed or not self._started:
            state = "closed" if self._closed else "not started"
            raise EngineUnavailable(f"engine is {state}", target=self.name, model=str(model))
        if model.name != self.model_name:
            raise ModelNotFound(
                f"no model {model.name!r}; serving {[self.model_name]}", target=self.name, model=str(model)
            )
        if model.signature is not None and model.signature != self.signature_name:
            raise ModelNotFound(
                f"signature {model.signature!r} is not served; this engine serves {self.signature_name!r}",
                target=self.name,
                model=str(model),
            )
        if model.version is None:
            return self._default
        if model.version.isdigit():
            return _Spec(version=int(model.version))
        return _Spec(label=model.version)

    def _model_spec(self, spec: _Spec) -> Any:
        model_spec = self._protos.model.ModelSpec(name=self.model_name, signature_name=self.signature_name)
        if spec.version is not None:
            model_spec.version.value = spec.version
        elif spec.label is not None:
            model_spec.version_label = spec.label
        return model_spec

    async def _fetch_metadata(self, spec: _Spec, timeout_s: float | None) -> ModelMetadata:
        where = {"target": self.name, "model": f"{self.model_name}/{spec}"}
        request = self._protos.metadata.GetModelMetadataRequest(
            model_spec=self._model_spec(spec), metadata_field=["signature_def"]
        )
        reply = await self._call(self._predict_stub.GetModelMetadata, request, timeout_s, **where)
        signatures = self._protos.metadata.SignatureDefMap()
        if "signature_def" not in reply.metadata or not reply.metadata["signature_def"].Unpack(signatures):
            raise EngineUnavailable("GetModelMetadata answered without a signature_def map", **where)
        if self.signature_name not in signatures.signature_def:
            served = sorted(key for key in signatures.signature_def if not key.startswith("__"))
            raise ModelNotFound(f"no signature {self.signature_name!r}; signatures: {served}", **where)
        signature = signatures.signature_def[self.signature_name]
        if reply.model_spec.HasField("version"):
            version = str(reply.model_spec.version.value)
        elif spec.version is not None:
            version = str(spec.version)
        else:
            raise EngineUnavailable("GetModelMetadata did not say which version it resolved", **where)
        meta = ModelMetadata(
            name=self.model_name,
            version=version,
            inputs=tuple(
                self._tensor_spec("input", key, info, **where) for key, info in sorted(signature.inputs.items())
            ),
            outputs=tuple(
                self._tensor_spec("output", key, info, **where) for key, info in sorted(signature.outputs.items())
            ),
        )
        if not meta.inputs or not meta.outputs:
            raise EngineUnavailable(f"signature {self.signature_name!r} has no inputs or no outputs", **where)
        self._metadata[spec] = meta
        return meta

    def _tensor_spec(self, kind: str, key: str, info: Any, *, target: str, model: str) -> TensorSpec:
        dt = self._protos.types.DataType.Name(info.dtype)
        dtype = _NUMPY_BY_DT.get(dt)
        if dtype is None:
            raise EngineUnavailable(
                f"signature {self.signature_name!r} {kind} {key!r} has dtype {dt}, which this engine does not send "
                f"as raw bytes (supported: {sorted(_NUMPY_BY_DT)})",
                target=target,
                model=model,
            )
        if info.tensor_shape.unknown_rank:
            raise EngineUnavailable(
                f"signature {self.signature_name!r} {kind} {key!r} has unknown rank; inputs cannot be checked",
                target=target,
                model=model,
            )
        shape = tuple(dim.size if dim.size >= 0 else -1 for dim in info.tensor_shape.dim)
        return TensorSpec(name=key, dtype=dtype, shape=shape)

    async def _call(self, method: Any, request: Any, timeout_s: float | None, *, target: str, model: str) -> Any:
        try:
            return await method(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            raise _translate(error, timeout_s, target=target, model=model) from None

    # -- tensors ----------------------------------------------------------------------------------------

    def _tensor_proto(self, value: np.ndarray) -> Any:
        """Bytes in, never per-element fields: dtype, shape and `tensor_content` (little-endian, C order)."""
        array = np.ascontiguousarray(value)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        protos = self._protos
        shape = protos.shape.TensorShapeProto(dim=[protos.shape.TensorShapeProto.Dim(size=n) for n in array.shape])
        return protos.tensor.TensorProto(
            dtype=protos.types.DataType.Value(_DT_BY_NUMPY[array.dtype.name]),  # check_inputs vetted the dtype
            tensor_shape=shape,
            tensor_content=array.tobytes(),
        )

    def _array(self, name: str, proto: Any, *, target: str, model: str) -> np.ndarray:
        try:
            dt = self._protos.types.DataType.Name(proto.dtype)
        except ValueError:  # a number this TensorFlow does not know
            dt = str(proto.dtype)
        dtype_name = _NUMPY_BY_DT.get(dt)
        if dtype_name is None:
            raise BadOutput(
                f"output {name!r} has dtype {dt}, which is not a numeric tensor", target=target, model=model
            )
        dtype = np.dtype(dtype_name).newbyteorder("<")
        if proto.tensor_shape.unknown_rank:
            raise BadOutput(f"output {name!r} has unknown rank", target=target, model=model)
        shape = tuple(dim.size for dim in proto.tensor_shape.dim)
        if any(n < 0 for n in shape):
            raise BadOutput(f"output {name!r} has a negative dimension: {shape}", target=target, model=model)
        count = math.prod(shape)
        if proto.tensor_content:
            if len(proto.tensor_content) != count * dtype.itemsize:
                raise BadOutput(
                    f"output {name!r} of shape {shape} ({dtype_name}) needs {count * dtype.itemsize} bytes, "
                    f"got {len(proto.tensor_content)}",
                    target=target,
                    model=model,
                )
            return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape).astype(dtype_name, copy=False)
        values = getattr(proto, _VALUE_FIELD[dtype_name]) if dtype_name in _VALUE_FIELD else proto.half_val
        if dtype_name == "float16":  # half_val holds the raw 16 bits of each value
            array = np.asarray(values, dtype=np.uint16).view(np.float16)
        else:
            array = np.asarray(values, dtype=dtype_name)
        if array.size == count:
            return array.reshape(shape)
        if array.size == 1 and count > 0:  # TensorFlow's convention: one value fills the tensor
            return np.full(shape, array[0], dtype=dtype_name)
        raise BadOutput(
            f"output {name!r} of shape {shape} holds {array.size} values, expected {count}", target=target, model=model
        )


def _translate(error: grpc.aio.AioRpcError, timeout_s: float | None, *, target: str, model: str) -> EngineError:
    """The shared table, but an unknown version label (INVALID_ARGUMENT from TF Serving) is a missing model."""
    if error.code() is grpc.StatusCode.INVALID_ARGUMENT and _UNKNOWN_LABEL in (error.details() or ""):
        return ModelNotFound(f"{error.code().name}: {error.details()}", target=target, model=model)
    return engine_error(error, timeout_s, target=target, model=model)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a caller
    _conforms: type[Engine] = TFServingEngine
