"""Triton Inference Server over gRPC, with the Open Inference Protocol stubs tritonclient ships.

The only engine module importing tritonclient. Calls go straight through its generated
`GRPCInferenceServiceStub` on one grpc.aio channel rather than through `tritonclient.grpc.aio`'s
`InferenceServerClient`: that client wraps every tensor in Python objects per call (InferInput,
InferRequestedOutput, InferResult), which cost more than the rest of a proxied call's Python work.
ModelInfer requests are serialized here rather than by protobuf (`_serialized_request`): copying a tensor
into a message for protobuf to serialize took 16 µs for 150 kB and 640 µs for 600 kB (this takes 6 and 14).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from engines._grpc import engine_error, open_channel
from engines._signature import check_inputs, check_outputs, check_rows
from engines.base import Engine
from engines.errors import (
    BadInput,
    BadOutput,
    EngineTimeout,
    EngineUnavailable,
    ModelNotFound,
)
from engines.oip_datatypes import LITTLE_ENDIAN, NATIVE
from engines.types import ModelMetadata, ModelRef, Tensors, TensorSpec

if TYPE_CHECKING:
    from engines.tls_config import GrpcTlsConfig

_MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class _Served:
    """One model as the server described it at start: its signature (batch dimension included as -1 when
    Triton batches it) and the largest batch one request may carry (0: the model does not batch)."""

    remote: str
    metadata: ModelMetadata
    max_batch_size: int
    versions: tuple[str, ...]
    input_datatypes: tuple[str, ...]  # Triton's datatype of each of metadata.inputs, in order
    # The part of every ModelInferRequest to this model that never changes (model_name, the outputs asked
    # for), serialized once at start.
    request_head: bytes


class TritonEngine:
    """Models on one Triton server at `url` (host:port of its gRPC endpoint).

    `models` maps the name callers use (`ModelRef.name`) to the model's name on Triton. `start()` checks,
    for each, that Triton knows it (`ModelNotFound` otherwise), that it is ready (`EngineUnavailable`),
    that its metadata and its config agree on inputs and outputs (names, datatypes, dims with the batch
    dimension), and that every tensor is a raw numeric type; any mismatch fails startup naming it.
    A `ModelRef.version` must be one of the versions Triton lists (`ModelNotFound` otherwise); none means
    Triton's own choice (its version policy), reported as the highest listed version.

    Inputs are checked before a request is sent (`BadInput`: signature, and the batch against
    max_batch_size); outputs after (`BadOutput`: missing, mis-sized, mis-typed, mis-shaped, non-finite, or
    a batch model answering a different number of rows). Tensors travel as raw binary contents; outputs
    are read-only views of the reply. `headers` (e.g. PyTriton's access token) go with every call.
    Triton status -> error: UNAVAILABLE -> EngineUnavailable, DEADLINE_EXCEEDED -> EngineTimeout,
    NOT_FOUND -> ModelNotFound, INVALID_ARGUMENT -> BadInput, RESOURCE_EXHAUSTED -> EngineOverloaded,
    anything else -> EngineError. One gRPC channel for the engine's lifetime.
    """

    def __init__(
        self,
        name: str,
        url: str,
        models: Mapping[str, str],
        *,
        headers: Mapping[str, str] | None = None,
        startup_timeout_s: float = 10.0,
        tls: GrpcTlsConfig | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self._remote = dict(models)
        self._headers = dict(headers or {})
        self._startup_timeout_s = startup_timeout_s
        self._tls = tls
        self._metadata_pairs = tuple(self._headers.items())
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None  # service_pb2_grpc.GRPCInferenceServiceStub (untyped generated code)
        # ModelInfer taking the request already serialized (`_serialized_request`), answering a parsed reply.
        self._model_infer: grpc.aio.UnaryUnaryMultiCallable[bytes, Any] | None = None
        self._served: dict[str, _Served] = {}
        self._started = False
        self._closed = False

    async def start(self) -> None:
        self._channel = open_channel(self.url, self._tls, engine=self.name)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._model_infer = self._channel.unary_unary(  # type: ignore[call-arg]  # grpc-stubs lag grpcio
            _MODEL_INFER,
            request_serializer=None,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
            # As the generated stubs do: core resolves the method once, not on every call.
            _registered_method=True,
        )
        for model, remote in self._remote.items():
            self._served[model] = await self._describe(model, remote)
        self._started = True

    async def ready(self) -> bool:
        return self._started and not self._closed

    async def metadata(self, model: ModelRef) -> ModelMetadata:
        served = self._lookup(model)
        if model.version is None or model.version == served.metadata.version:
            return served.metadata
        return ModelMetadata(
            name=served.metadata.name,
            version=model.version,
            inputs=served.metadata.inputs,
            outputs=served.metadata.outputs,
        )

    async def infer(self, model: ModelRef, inputs: Tensors, *, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        served = self._lookup(model)
        where = {"target": self.name, "model": str(model)}
        if timeout_s is not None and timeout_s <= 0:
            raise EngineTimeout("no time left for the call", **where)
        meta = served.metadata
        check_inputs(meta, inputs, **where)
        if served.max_batch_size > 0:
            rows = max(inputs[spec.name].shape[0] for spec in meta.inputs)
            if rows > served.max_batch_size:
                raise BadInput(
                    f"batch of {rows} rows exceeds the model's max_batch_size {served.max_batch_size}", **where
                )
        body = _serialized_request(served, model.version, inputs)
        assert self._model_infer is not None  # set by start(), which _lookup checked
        try:
            response = await self._model_infer(body, timeout=timeout_s, metadata=self._metadata_pairs)
        except grpc.aio.AioRpcError as error:
            raise engine_error(error, timeout_s, **where) from None
        checked = check_outputs(meta, _decode_outputs(response, **where), **where)
        check_rows(meta, inputs, checked, **where)
        return checked

    async def close(self) -> None:
        self._closed = True
        if self._channel is not None:
            await self._channel.close(grace=None)

    # -- startup ----------------------------------------------------------------------------------------

    async def _describe(self, model: str, remote: str) -> _Served:
        where = {"target": self.name, "model": model}
        stub = self._stub
        call = {"timeout": self._startup_timeout_s, "metadata": self._metadata_pairs}
        timeout_s = self._startup_timeout_s
        try:
            meta = await stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=remote), **call)
            if not (await stub.ModelReady(service_pb2.ModelReadyRequest(name=remote), **call)).ready:
                raise EngineUnavailable(f"Triton model {remote!r} at {self.url} is not ready", **where)
            config = (await stub.ModelConfig(service_pb2.ModelConfigRequest(name=remote), **call)).config
        except grpc.aio.AioRpcError as error:
            raise engine_error(error, timeout_s, **where) from None
        batch = int(config.max_batch_size)
        problems = [
            *_compare("input", meta.inputs, config.input, batch),
            *_compare("output", meta.outputs, config.output, batch),
        ]
        if problems:
            raise EngineUnavailable(
                f"Triton model {remote!r}: metadata and config disagree: {'; '.join(problems)}", **where
            )
        versions = tuple(sorted(meta.versions, key=lambda v: (len(v), v)))
        if not versions:
            raise EngineUnavailable(f"Triton model {remote!r} lists no versions", **where)
        return _Served(
            remote=remote,
            metadata=ModelMetadata(
                name=model,
                version=versions[-1],
                inputs=tuple(_spec("input", t, **where) for t in meta.inputs),
                outputs=tuple(_spec("output", t, **where) for t in meta.outputs),
            ),
            max_batch_size=batch,
            versions=versions,
            input_datatypes=tuple(str(t.datatype) for t in meta.inputs),
            request_head=service_pb2.ModelInferRequest(
                model_name=remote, outputs=[{"name": t.name} for t in meta.outputs]
            ).SerializeToString(),
        )

    def _lookup(self, model: ModelRef) -> _Served:
        if self._closed or not self._started:
            state = "closed" if self._closed else "not started"
            raise EngineUnavailable(f"engine is {state}", target=self.name, model=str(model))
        served = self._served.get(model.name)
        if served is None:
            raise ModelNotFound(
                f"no model {model.name!r}; serving {sorted(self._served)}", target=self.name, model=str(model)
            )
        if model.version is not None and model.version not in served.versions:
            raise ModelNotFound(
                f"Triton model {served.remote!r} has no version {model.version!r}; versions: {list(served.versions)}",
                target=self.name,
                model=str(model),
            )
        return served


def _spec(kind: str, tensor: Any, *, target: str, model: str) -> TensorSpec:
    if tensor.datatype not in LITTLE_ENDIAN:
        raise EngineUnavailable(
            f"{kind} {tensor.name!r} has datatype {tensor.datatype}, which this engine does not send as raw bytes",
            target=target,
            model=model,
        )
    dtype = NATIVE[tensor.datatype].name
    return TensorSpec(name=tensor.name, dtype=dtype, shape=tuple(int(d) if d >= 0 else -1 for d in tensor.shape))


def _compare(kind: str, described: Any, configured: Any, max_batch_size: int) -> list[str]:
    """Differences between the metadata's tensors and the config's (which leaves the batch dim out)."""
    by_name = {t.name: t for t in configured}
    problems = []
    for tensor in described:
        config = by_name.pop(tensor.name, None)
        if config is None:
            problems.append(f"{kind} {tensor.name!r} is not in the config")
            continue
        config_type = _data_type_name(config.data_type)
        if config_type != f"TYPE_{tensor.datatype}":
            problems.append(f"{kind} {tensor.name!r} is {tensor.datatype} in metadata, {config_type} in config")
        dims = ([-1] if max_batch_size > 0 else []) + [int(d) for d in config.dims]
        if [int(d) for d in tensor.shape] != dims:
            problems.append(f"{kind} {tensor.name!r} has shape {list(tensor.shape)} in metadata, {dims} in config")
    problems += [f"{kind} {name!r} is in the config only" for name in by_name]
    return problems


def _data_type_name(value: int) -> str:
    try:
        return str(model_config_pb2.DataType.Name(value))
    except ValueError:  # a number this client does not know
        return str(value)


def _raw_contents(value: np.ndarray, datatype: str) -> memoryview:
    """The tensor's bytes as the protocol's raw contents (C order, little endian), without a copy when
    they already are (engines take native arrays, and x86 and ARM are little endian)."""
    return np.ascontiguousarray(value, dtype=LITTLE_ENDIAN[datatype]).data


def _serialized_request(served: _Served, version: str | None, inputs: Tensors) -> bytes:
    """The ModelInferRequest sending `inputs` (already checked against the signature), serialized: the head
    serialized at start, then the fields of this call (version, shapes) serialized by protobuf, then one
    `raw_input_contents` entry per input. Protobuf parses concatenated encodings as one message (repeated
    fields append), so each tensor is copied once, into the body, instead of into a message and out again."""
    shapes = service_pb2.ModelInferRequest(model_version=version or "")
    contents: list[bytes | memoryview] = []
    for spec, datatype in zip(served.metadata.inputs, served.input_datatypes, strict=True):
        value = inputs[spec.name]
        shapes.inputs.add(name=spec.name, datatype=datatype, shape=value.shape)
        payload = _raw_contents(value, datatype)
        contents += (_RAW_INPUT_TAG, _varint(payload.nbytes), payload)
    return b"".join((served.request_head, shapes.SerializeToString(), *contents))


@functools.lru_cache(maxsize=256)  # the same few tensor sizes come again and again
def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int (the length prefix of a bytes field)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# The key of a length-delimited (wire type 2) raw_input_contents entry, from the message's own descriptor.
_RAW_INPUT_TAG = _varint(service_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number << 3 | 2)


def _decode_outputs(response: Any, *, target: str, model: str) -> dict[str, object]:
    """Arrays (read-only views of the reply's bytes) for every raw output in a ModelInferResponse."""
    raw = response.raw_output_contents
    if len(raw) != len(response.outputs):
        raise BadOutput(
            f"{len(raw)} raw_output_contents for {len(response.outputs)} outputs", target=target, model=model
        )
    outputs: dict[str, object] = {}
    for tensor, data in zip(response.outputs, raw, strict=True):
        name, datatype = tensor.name, tensor.datatype  # each read of a protobuf field builds a new str
        dtype = LITTLE_ENDIAN.get(datatype)
        if dtype is None:
            raise BadOutput(f"output {name!r} has datatype {datatype}", target=target, model=model)
        shape = tuple(tensor.shape)
        if len(data) != math.prod(shape) * dtype.itemsize:
            raise BadOutput(
                f"output {name!r} cannot be decoded: {len(data)} bytes for shape {list(shape)} of {datatype}",
                target=target,
                model=model,
            )
        array: np.ndarray = np.ndarray(shape, dtype, data)  # a view of `data`, in one call
        outputs[name] = array if array.dtype.isnative else array.astype(dtype.newbyteorder("="))
    return outputs


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a caller
    _conforms: type[Engine] = TritonEngine
