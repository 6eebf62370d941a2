"""OpenTelemetry spans of steps and model calls, at no cost while tracing is off.

The API's no-op spans are not free: opening one as the current span attaches and detaches a context
(~10 µs), and a request opens one per step and per model call (a twentieth of the in-process request in
a profile). Until the application installs an SDK tracer provider (`gateway.tracing`), `span` opens none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry import trace as otel

_tracer = otel.get_tracer("quasar.remix")


def recording() -> bool:
    """Whether an SDK tracer provider is installed (the API's default is a proxy that records nothing)."""
    return not isinstance(otel.get_tracer_provider(), otel.ProxyTracerProvider)


def span(name: str, attributes: Mapping[str, str]) -> AbstractContextManager[otel.Span | None]:
    """The current span `name` while tracing is on; otherwise nothing (yields None)."""
    if not recording():
        return nullcontext()
    return _current(name, attributes)


@contextmanager
def _current(name: str, attributes: Mapping[str, str]) -> Iterator[otel.Span]:
    with _tracer.start_as_current_span(name, attributes=dict(attributes)) as opened:
        yield opened
