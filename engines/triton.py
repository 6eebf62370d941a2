"""Triton Inference Server over gRPC (`tritonclient.grpc.aio`). The only module that imports tritonclient."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput, model_config_pb2
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

from engines._signature import check_inputs, check_outputs, check_rows
from engines.base import Engine
from engines.errors import (
    BadInput,
    BadOutput,
    EngineError,
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    ModelNotFound,
)
from engines.types import ModelMetadata, ModelRef, Tensors, TensorSpec

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A restarted server is found again within a second or two, not after gRPC's default 2-minute backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
]
# Triton's datatypes we send and read as raw bytes; BYTES (strings) are not raw.
_RAW_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
)


@dataclass(frozen=True)
class _Served:
    """One model as the server described it at start: its signature (batch dimension included as -1 when
    Triton batches it) and the largest batch one request may carry (0: the model does not batch)."""

    remote: str
    metadata: ModelMetadata
    max_batch_size: int
    versions: tuple[str, ...]


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
    ) -> None:
        self.name = name
        self.url = url
        self._remote = dict(models)
        self._headers = dict(headers or {})
        self._startup_timeout_s = startup_timeout_s
        self._client: InferenceServerClient | None = None
        self._served: dict[str, _Served] = {}
        self._started = False
        self._closed = False

    async def start(self) -> None:
        self._client = InferenceServerClient(self.url, channel_args=_CHANNEL_ARGS)
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
        infer_inputs = []
        for spec in meta.inputs:
            value = np.ascontiguousarray(inputs[spec.name])
            infer_inputs.append(
                InferInput(spec.name, list(value.shape), np_to_triton_dtype(value.dtype)).set_data_from_numpy(value)
            )
        requested = [InferRequestedOutput(spec.name) for spec in meta.outputs]
        assert self._client is not None  # _lookup checked the engine is started
        try:
            result = await self._client.infer(
                served.remote,
                infer_inputs,
                model_version=model.version or "",
                outputs=requested,
                client_timeout=timeout_s,
                headers=self._headers,
            )
        except InferenceServerException as error:
            raise _translate(error, timeout_s, **where) from None
        outputs: dict[str, object] = {}
        for spec in meta.outputs:
            try:
                value = result.as_numpy(spec.name)
            except (ValueError, TypeError) as error:  # raw contents that do not fill the declared shape
                raise BadOutput(f"output {spec.name!r} cannot be decoded: {error}", **where) from None
            if value is not None:
                outputs[spec.name] = value
        checked = check_outputs(meta, outputs, **where)
        check_rows(meta, inputs, checked, **where)
        return checked

    async def close(self) -> None:
        self._closed = True
        if self._client is not None:
            await self._client.close()

    # -- startup ----------------------------------------------------------------------------------------

    async def _describe(self, model: str, remote: str) -> _Served:
        where = {"target": self.name, "model": model}
        client = self._client
        assert client is not None
        timeout_s = self._startup_timeout_s
        try:
            meta = await client.get_model_metadata(remote, headers=self._headers, client_timeout=timeout_s)
            if not await client.is_model_ready(remote, headers=self._headers, client_timeout=timeout_s):
                raise EngineUnavailable(f"Triton model {remote!r} at {self.url} is not ready", **where)
            config = (await client.get_model_config(remote, headers=self._headers, client_timeout=timeout_s)).config
        except InferenceServerException as error:
            raise _translate(error, timeout_s, **where) from None
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
    if tensor.datatype not in _RAW_DATATYPES:
        raise EngineUnavailable(
            f"{kind} {tensor.name!r} has datatype {tensor.datatype}, which this engine does not send as raw bytes",
            target=target,
            model=model,
        )
    dtype = np.dtype(triton_to_np_dtype(tensor.datatype)).name
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


def _translate(error: InferenceServerException, timeout_s: float | None, *, target: str, model: str) -> EngineError:
    where = {"target": target, "model": model}
    status = str(error.status() or "")
    code = status.removeprefix("StatusCode.")
    message = f"{code or 'ERROR'}: {error.message()}"
    if code == "UNAVAILABLE":
        return EngineUnavailable(message, **where)
    if code == "DEADLINE_EXCEEDED":
        return EngineTimeout(f"no answer within {timeout_s}s ({message})", **where)
    if code == "NOT_FOUND":
        return ModelNotFound(message, **where)
    if code == "INVALID_ARGUMENT":
        return BadInput(message, **where)
    if code == "RESOURCE_EXHAUSTED":
        return EngineOverloaded(message, **where)
    if code == "CANCELLED":  # our channel closed under the call (our own task's cancellation re-raises)
        return EngineUnavailable(message, **where)
    return EngineError(message, **where)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a caller
    _conforms: type[Engine] = TritonEngine
