"""Prometheus metrics of the router, per logical model and target, on a registry passed in.

Label values are bounded: `model` is a route name and `target` a target label ('engine/model[/version]'),
both from configuration; `outcome` is one of `OUTCOMES` or `SHADOW_OUTCOMES`; `head` is a head name given
to `Router.describe_outputs`, or an output name and column (at most
`engines.shadow_diff.MAX_UNDESCRIBED_COLUMNS` columns an output).
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
# ok, no_primary, incomparable: the shadow answered; ok: and its answer was compared with the primary's.
SHADOW_OUTCOMES = ("ok", "no_primary", "incomparable", "timeout", "error", "dropped", "breaker_open")

# Mean absolute score deltas: float noise (~1e-7) up to a different model; scores are mostly in [0, 1].
SCORE_DELTA_BUCKETS = (1e-6, 1e-4, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
# Top-K overlap in [0, 1]; a healthy candidate overlaps almost entirely, so the top is finer.
TOPK_OVERLAP_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
# Kendall's tau in [-1, 1]. Below 0 the shadow ranks backwards, which needs no finer buckets; and no bound
# below 0, or prometheus_client leaves out the histogram's _sum (so the mean tau).
RANK_CORRELATION_BUCKETS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)

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
            "Shadow calls by outcome; ok: answered and compared with the primary's answer; no_primary: answered, "
            "but the caller got no answer to compare with; incomparable: answered, but not comparable (other "
            "outputs or shapes, non-finite); dropped: over the route's max_shadow_in_flight.",
            ("model", "target", "outcome"),
            registry=self.registry,
        )
        self.shadow_score_delta = Histogram(
            "quasar_shadow_score_delta",
            "Mean absolute difference of a head's scores, shadow vs primary answer to one call (one sample a call).",
            ("model", "target", "head"),
            buckets=SCORE_DELTA_BUCKETS,
            registry=self.registry,
        )
        self.shadow_topk_overlap = Histogram(
            "quasar_shadow_topk_overlap",
            "Share of the primary answer's top-K rows of a head that are in the shadow's top K (one sample a call).",
            ("model", "target", "head"),
            buckets=TOPK_OVERLAP_BUCKETS,
            registry=self.registry,
        )
        self.shadow_rank_correlation = Histogram(
            "quasar_shadow_rank_correlation",
            "Kendall's tau of a head's orderings of all rows, shadow vs primary (no sample where undefined).",
            ("model", "target", "head"),
            buckets=RANK_CORRELATION_BUCKETS,
            registry=self.registry,
        )
