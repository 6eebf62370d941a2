"""Prometheus metrics of the router, per logical model and target, on a registry passed in.

Label values are bounded: `model` is a route name and `target` a target label ('engine/model[/version]'),
both from configuration; `outcome` is one of `OUTCOMES` or `SHADOW_OUTCOMES`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engines.errors import (
    BadInput,
    BadOutput,
    EngineError,
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    ModelNotFound,
)

# Model calls take from a fraction of a millisecond (in process) to a few hundred (remote, loaded).
CALL_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)

OUTCOMES = (
    "ok",
    "timeout",
    "unavailable",
    "overloaded",
    "breaker_open",
    "not_found",
    "bad_input",
    "bad_output",
    "error",
    "cancelled",
)
SHADOW_OUTCOMES = ("ok", "timeout", "error", "dropped", "breaker_open")

# Most specific first: the first class an error is an instance of names its outcome.
_ERROR_OUTCOMES: tuple[tuple[type[EngineError], str], ...] = (
    (EngineTimeout, "timeout"),
    (EngineOverloaded, "overloaded"),
    (EngineUnavailable, "unavailable"),
    (ModelNotFound, "not_found"),
    (BadInput, "bad_input"),
    (BadOutput, "bad_output"),
)


def error_outcome(error: EngineError) -> str:
    """The `outcome` label of a failed call (breaker refusals are labelled by the router)."""
    for cls, outcome in _ERROR_OUTCOMES:
        if isinstance(error, cls):
            return outcome
    return "error"


class RouteMetrics:
    """The router's metrics. With no registry they go to a private one (never the global registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "quasar_engine_requests_total",
            "Calls to route targets by outcome; breaker_open calls were refused without calling.",
            ("model", "target", "outcome"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "quasar_engine_request_seconds",
            "Time of calls to route targets, any outcome, refused calls excluded.",
            ("model", "target"),
            buckets=CALL_BUCKETS_S,
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "quasar_engine_fallbacks_total",
            "Calls that moved on from a failed (or breaker-refused) target to the next in the chain.",
            ("model", "from_target"),
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "quasar_engine_breaker_state",
            "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.",
            ("target",),
            registry=self.registry,
        )
        self.shadow = Counter(
            "quasar_engine_shadow_total",
            "Shadow calls by outcome; dropped: over the route's max_shadow_in_flight.",
            ("model", "target", "outcome"),
            registry=self.registry,
        )
