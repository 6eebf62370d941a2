"""OpenTelemetry for the gateway process: off by default, OTLP when configured.

Steps and model calls create spans through the OpenTelemetry API (remix); this module installs the SDK
that records them, a server interceptor that continues the caller's W3C trace context, and client
instrumentation that propagates it to gRPC backends (Triton, TF Serving).
"""

from __future__ import annotations

from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from pydantic import BaseModel, ConfigDict, Field


class TracingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exporter: Literal["none", "otlp"] = "none"
    otlp_endpoint: str = Field("http://127.0.0.1:4317", description="OTLP/gRPC collector endpoint")
    service_name: str = "quasar-gateway"
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="share of new traces recorded")


def configure_tracing(settings: TracingSettings, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Install an SDK tracer provider for the process, or do nothing when tracing is off.

    `exporter` overrides the configured one (tests pass an in-memory exporter; it is flushed per span).
    The provider is process-wide by OpenTelemetry's design: call this once, from the process entry point.
    """
    if exporter is None and settings.exporter == "none":
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBasedTraceIdRatio(settings.sample_ratio),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    trace.set_tracer_provider(provider)
    # Client calls made on grpc.aio channels created from now on carry the current trace context.
    GrpcAioInstrumentorClient().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    return provider


def server_interceptors(enabled: bool) -> list[Any]:
    """The interceptor that opens a server span per RPC from the caller's trace context, when tracing is on."""
    return [aio_server_interceptor()] if enabled else []  # type: ignore[no-untyped-call]


def current_trace_id() -> str | None:
    """Hex trace id of the active span, for log lines; None outside a recorded trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
