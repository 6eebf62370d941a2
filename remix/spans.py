"""OpenTelemetry spans of steps and model calls, at no cost while tracing is off.

The API's no-op spans are not free: opening one as the current span attaches and detaches a context
(~10 µs), and a request opens one per step and per model call (a twentieth of the in-process request in
a profile). Until the application installs an SDK tracer provider (`gateway.tracing`), `span` opens none;
a request asks once, when its context is made, and keeps the answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry import trace as otel

_tracer = otel.get_tracer("quasar.remix")


def recording() -> bool:
    """Whether an SDK tracer provider is installed (the API's default is a proxy that records nothing)."""
    return not isinstance(otel.get_tracer_provider(), otel.ProxyTracerProvider)


_NO_SPAN: AbstractContextManager[None] = nullcontext()  # reusable: it holds nothing


def span(name: str, attributes: Mapping[str, str], *, on: bool) -> AbstractContextManager[otel.Span | None]:
    """The current span `name` when `on`; otherwise nothing (yields None).

    `on` is a request's `Context.tracing`, which asked `recording()` once when the request began: asking
    the API per span costs an environment lookup each time (~3 % of an in-process request, profiled)."""
    if not on:
        return _NO_SPAN
    return _current(name, attributes)


@contextmanager
def _current(name: str, attributes: Mapping[str, str]) -> Iterator[otel.Span]:
    with _tracer.start_as_current_span(name, attributes=dict(attributes)) as opened:
        yield opened
