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
from typing import Any

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from engines import Router
from engines.errors import BadInput
from engines.types import ModelMetadata as Signature  # the servicer has a method named ModelMetadata
from gateway.admission import Admission
from gateway.status import Aborter, RequestRejected, deadline_expired_on_arrival, invalid_argument, not_found
from gateway.tensor_codec import (
    config_datatype,
    decode_inputs,
    encode_outputs,
    requested_outputs,
    tensor_metadata,
)

__all__ = ["InferenceServicer", "add_inference_service", "decode_inputs", "encode_outputs", "requested_outputs"]

SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
ROUTING_KEY_PARAMETER = "routing_key"
PLATFORM = "quasar_logical_model"
_RESPONSE_MARGIN_S = 0.002  # as GetFeed: time kept back to send the answer before the deadline


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Converts (`gateway.tensor_codec`) and delegates to the router; ModelInfer runs under admission
    control like GetFeed. `default_timeout_s` bounds a call whose caller sent no deadline."""

    def __init__(
        self,
        router: Router,
        admission: Admission,
        *,
        default_timeout_s: float,
        server_version: str,
        aborter: Aborter | None = None,
    ) -> None:
        """`aborter`: the server's one abort path (default: a private one)."""
        self._router = router
        self._aborter = aborter or Aborter()
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
                inputs=[tensor_metadata(spec) for spec in meta.inputs],
                outputs=[tensor_metadata(spec) for spec in meta.outputs],
            )
        except Exception as error:
            await self._aborter.abort(context, error, method="ModelMetadata")

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
                    model_config_pb2.ModelInput(name=s.name, data_type=config_datatype(s), dims=s.shape)
                    for s in meta.inputs
                ],
                output=[
                    model_config_pb2.ModelOutput(name=s.name, data_type=config_datatype(s), dims=s.shape)
                    for s in meta.outputs
                ],
            )
            return service_pb2.ModelConfigResponse(config=config)
        except Exception as error:
            await self._aborter.abort(context, error, method="ModelConfig")

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """Empty statistics for known models: Quasar's per-target figures are its Prometheus metrics."""
        names = [request.name] if request.name else sorted(self._router.routes)
        if request.name and request.name not in self._router.routes:
            await self._aborter.abort(context, _not_found(request.name, self._router), method="ModelStatistics")
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
            await self._aborter.abort(context, error, method="ModelInfer", request_id=request.id or "-")

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
            raise deadline_expired_on_arrival()
        return float(remaining) - _RESPONSE_MARGIN_S


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
        raise invalid_argument(
            f"parameter {ROUTING_KEY_PARAMETER!r} must be an integer (int64_param, uint64_param or a decimal "
            f"string_param), got {kind or 'no value'}"
        )
    if request.id:
        return int.from_bytes(hashlib.blake2b(request.id.encode(), digest_size=8).digest(), "big") >> 1
    return 0


def _not_found(name: str, router: Router) -> RequestRejected:
    return not_found(f"no model {name!r}; models: {sorted(router.routes)}")


def _version_refused(name: str, version: str) -> RequestRejected:
    return invalid_argument(
        f"model {name!r} is a logical model: leave model_version empty (got {version!r}); "
        "its routes choose the version, and the response's model_version says which answered"
    )


def add_inference_service(servicer: InferenceServicer, server: grpc.aio.Server) -> str:
    """Register the service on `server`; returns its full name (for reflection and health)."""
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    return str(SERVICE)
