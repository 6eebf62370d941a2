"""Open Inference Protocol v2 (`inference.GRPCInferenceService`, as Triton and KServe speak it) over the
router's LOGICAL models, so stock clients (tritonclient, perf_analyzer) can call `feed_ranker` directly.

The only gateway module importing tritonclient, whose bundled `service_pb2` stubs are served as they are.

- A model is a logical model (a route name); its signature is the route's (`Router.metadata`), its
  version in answers is the version of the target that answered. `model_version` in requests must be
  empty: which version answers is the routes' decision (A/B, fallback), reported back per call.
- Routing key (sticky A/B): the request parameter `routing_key` (int64, uint64, or a decimal string),
  else a stable hash of the request `id`, else 0 — so anonymous traffic all lands on one arm.
- ModelInfer takes inputs as `raw_input_contents` (what tritonclient and perf_analyzer send; little
  endian, one entry per input) or as typed `contents`, and always answers with `raw_output_contents`.
  Shared-memory inputs and outputs, BYTES and BF16 tensors, and float inputs holding NaN or infinity
  are refused with INVALID_ARGUMENT.
- Errors: unknown model NOT_FOUND; malformed tensors, or ones that do not fit the model,
  INVALID_ARGUMENT; backends down UNAVAILABLE; the deadline DEADLINE_EXCEEDED; admission limits and
  draining as for GetFeed (RESOURCE_EXHAUSTED, UNAVAILABLE).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from typing import Any, NoReturn

import grpc
import numpy as np
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from engines import Router
from engines.errors import BadInput
from engines.types import ModelMetadata as Signature  # the servicer has a method named ModelMetadata
from engines.types import TensorSpec
from gateway.admission import Admission
from gateway.status import RequestRejected, invalid_argument, to_status

log = logging.getLogger(__name__)

SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
ROUTING_KEY_PARAMETER = "routing_key"
PLATFORM = "quasar_logical_model"
_RESPONSE_MARGIN_S = 0.002  # as GetFeed: time kept back to send the answer before the deadline

# Open Inference Protocol datatype <-> numpy, and the typed `InferTensorContents` field of each.
_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_DATATYPE = {dtype.name: datatype for datatype, dtype in _NUMPY.items()}
_DATATYPE_OF_DTYPE = {dtype: datatype for datatype, dtype in _NUMPY.items()}  # hashed as dtypes: `.name` is slow
_LITTLE_ENDIAN = {dtype: dtype.newbyteorder("<") for dtype in _NUMPY.values()}
_TYPED_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Converts and delegates to the router; ModelInfer runs under admission control like GetFeed.
    `default_timeout_s` bounds a call whose caller sent no deadline."""

    def __init__(self, router: Router, admission: Admission, *, default_timeout_s: float, server_version: str) -> None:
        self._router = router
        self._admission = admission
        self._default_timeout_s = default_timeout_s
        self._server_version = server_version

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return service_pb2.ServerReadyResponse(ready=not self._admission.draining and await self._router.ready())

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return service_pb2.ServerMetadataResponse(name="quasar", version=self._server_version, extensions=[])

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        known = request.name in self._router.routes and not request.version
        return service_pb2.ModelReadyResponse(ready=known and await self._router.ready())

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            meta = await self._metadata(request.name, request.version)
            return service_pb2.ModelMetadataResponse(
                name=request.name,
                versions=self._router.versions(request.name),
                platform=PLATFORM,
                inputs=[_tensor_metadata(spec) for spec in meta.inputs],
                outputs=[_tensor_metadata(spec) for spec in meta.outputs],
            )
        except Exception as error:
            await _abort(context, error, request.name)

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """A minimal config (what perf_analyzer reads): no batching dimension of Triton's kind, so
        shapes are full shapes, with -1 for the variable row count."""
        try:
            meta = await self._metadata(request.name, request.version)
            config = model_config_pb2.ModelConfig(
                name=request.name,
                platform=PLATFORM,
                max_batch_size=0,
                input=[
                    model_config_pb2.ModelInput(name=s.name, data_type=_config_type(s), dims=s.shape)
                    for s in meta.inputs
                ],
                output=[
                    model_config_pb2.ModelOutput(name=s.name, data_type=_config_type(s), dims=s.shape)
                    for s in meta.outputs
                ],
            )
            return service_pb2.ModelConfigResponse(config=config)
        except Exception as error:
            await _abort(context, error, request.name)

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """Empty statistics for known models: Quasar's per-target figures are its Prometheus metrics."""
        names = [request.name] if request.name else sorted(self._router.routes)
        if request.name and request.name not in self._router.routes:
            await _abort(context, _not_found(request.name, self._router), request.name)
        return service_pb2.ModelStatisticsResponse(
            model_stats=[service_pb2.ModelStatistics(name=name, version=request.version) for name in names]
        )

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            async with self._admission.admit():
                if request.model_name not in self._router.routes:
                    raise _not_found(request.model_name, self._router)
                if request.model_version:
                    raise _version_refused(request.model_name, request.model_version)
                inputs = decode_inputs(request)
                requested = requested_outputs(request)
                timeout_s = self._timeout_s(context)
                try:
                    call = await self._router.infer(
                        request.model_name, inputs, timeout_s=timeout_s, routing_key=routing_key(request)
                    )
                except BadInput as error:  # the client built these tensors: its error, not a backend's
                    raise invalid_argument(str(error)) from None
                response = service_pb2.ModelInferResponse(
                    model_name=request.model_name, model_version=call.version, id=request.id
                )
                encode_outputs(call.outputs, requested, response)
                response.parameters["quasar_target"].string_param = call.target
                if call.degraded_reason:
                    response.parameters["quasar_degraded_reason"].string_param = call.degraded_reason
                return response
        except Exception as error:
            await _abort(context, error, request.model_name)

    async def _metadata(self, name: str, version: str) -> Signature:
        if name not in self._router.routes:
            raise _not_found(name, self._router)
        if version:
            raise _version_refused(name, version)
        return await self._router.metadata(name)

    def _timeout_s(self, context: grpc.aio.ServicerContext[Any, Any]) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self._default_timeout_s
        if remaining <= _RESPONSE_MARGIN_S:
            raise RequestRejected(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline already expired on arrival")
        return float(remaining) - _RESPONSE_MARGIN_S


def decode_inputs(request: Any) -> dict[str, np.ndarray]:
    """Named arrays from a ModelInferRequest, without per-element copies for raw contents.

    Raw arrays are read-only views of the request's bytes (engines never write to their inputs).
    Raises `RequestRejected(INVALID_ARGUMENT)` for anything malformed.
    """
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid_argument(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: give one per input")
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise invalid_argument(f"input {tensor.name!r} is given twice")
        if any(key.startswith("shared_memory") for key in tensor.parameters):
            raise invalid_argument(f"input {tensor.name!r}: shared memory is not supported; send the data")
        dtype = _NUMPY.get(tensor.datatype)
        if dtype is None:
            raise invalid_argument(
                f"input {tensor.name!r} has datatype {tensor.datatype!r}; supported: {sorted(_NUMPY)}"
            )
        shape = tuple(int(dim) for dim in tensor.shape)
        if any(dim < 0 for dim in shape):
            raise invalid_argument(f"input {tensor.name!r} has shape {list(shape)}: dimensions must be >= 0")
        count = math.prod(shape)
        if raw:
            data = raw[index]
            if len(data) != count * dtype.itemsize:
                raise invalid_argument(
                    f"input {tensor.name!r}: {len(data)} bytes of raw contents; shape {list(shape)} of "
                    f"{tensor.datatype} needs {count * dtype.itemsize}"
                )
            array = np.frombuffer(data, dtype=_LITTLE_ENDIAN[dtype]).reshape(shape)
            inputs[tensor.name] = array if array.dtype.isnative else array.astype(dtype)
        else:
            field = _TYPED_FIELD.get(tensor.datatype)
            if field is None:
                raise invalid_argument(f"input {tensor.name!r}: {tensor.datatype} data must come as raw contents")
            values = getattr(tensor.contents, field)
            if len(values) != count:
                raise invalid_argument(
                    f"input {tensor.name!r}: {len(values)} values in contents.{field}; "
                    f"shape {list(shape)} needs {count}"
                )
            inputs[tensor.name] = np.asarray(values, dtype=dtype).reshape(shape)
        array = inputs[tensor.name]
        # NaN in, NaN out: the engines would refuse the scores as a backend fault (and count it against
        # the target's breaker), so one client's garbage could open a breaker for everyone.
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
            raise invalid_argument(f"input {tensor.name!r} holds {bad} non-finite values of {array.size}")
    return inputs


def requested_outputs(request: Any) -> list[str]:
    """Names of the outputs asked for (empty: all). Shared memory and classification are refused."""
    names = []
    for output in request.outputs:
        if not output.parameters:
            names.append(output.name)
            continue
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
        datatype = _DATATYPE_OF_DTYPE.get(native)
        if datatype is None:  # our engines answer numeric tensors only: a bug, not the client's fault
            raise TypeError(f"output {name!r} has dtype {array.dtype} with no inference-protocol datatype")
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        little = _LITTLE_ENDIAN[native]
        # tobytes() copies in C order; only a big-endian host needs the conversion first
        response.raw_output_contents.append((array if little == array.dtype else array.astype(little)).tobytes())


def routing_key(request: Any) -> int:
    """The A/B routing key of a request: parameter `routing_key`, else a hash of `id`, else 0."""
    if ROUTING_KEY_PARAMETER in request.parameters:
        parameter = request.parameters[ROUTING_KEY_PARAMETER]
        kind = parameter.WhichOneof("parameter_choice")
        if kind in ("int64_param", "uint64_param"):
            return int(getattr(parameter, kind))
        if kind == "string_param":
            try:
                return int(parameter.string_param)
            except ValueError:
                pass
        raise invalid_argument(f"parameter {ROUTING_KEY_PARAMETER!r} must be an integer, got {parameter}")
    if request.id:
        return int.from_bytes(hashlib.blake2b(request.id.encode(), digest_size=8).digest(), "big") >> 1
    return 0


def _tensor_metadata(spec: TensorSpec) -> Any:
    return service_pb2.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=_DATATYPE.get(spec.dtype, spec.dtype.upper()), shape=spec.shape
    )


def _config_type(spec: TensorSpec) -> int:
    datatype = _DATATYPE.get(spec.dtype)
    return int(model_config_pb2.DataType.Value(f"TYPE_{datatype}")) if datatype else model_config_pb2.TYPE_INVALID


def _not_found(name: str, router: Router) -> RequestRejected:
    return RequestRejected(grpc.StatusCode.NOT_FOUND, f"no model {name!r}; models: {sorted(router.routes)}")


def _version_refused(name: str, version: str) -> RequestRejected:
    return invalid_argument(
        f"model {name!r} is a logical model: leave model_version empty (got {version!r}); "
        "its routes choose the version, and the response's model_version says which answered"
    )


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: Exception, model: str) -> NoReturn:
    status = to_status(error, "-")
    if status.code is grpc.StatusCode.INTERNAL:
        log.exception("inference protocol call failed", extra={"model": model})
    await context.abort(status.code, status.message)
    raise AssertionError("unreachable: abort raises") from error


def add_inference_service(servicer: InferenceServicer, server: grpc.aio.Server) -> str:
    """Register the service on `server`; returns its full name (for reflection and health)."""
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    return str(SERVICE)
