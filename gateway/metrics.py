"""Prometheus metrics of one gateway, on a registry of its own (no process-global state).

Label values are bounded: gRPC service/method/code, workflow and step names from config, outcome enums.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# Serving latencies are milliseconds to a second: buckets from 1 ms to 2.5 s.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.grpc_started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", labels, registry=self.registry
        )
        self.grpc_handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success or failure.",
            (*labels, "grpc_code"),
            registry=self.registry,
        )
        self.grpc_handling = Histogram(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server.",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.workflow_requests = Counter(
            "quasar_workflow_requests_total",
            "Workflow runs by final outcome (ok, degraded, or the gRPC code of a failure).",
            ("workflow", "outcome"),
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "quasar_step_seconds",
            "Time spent in each workflow step, by outcome.",
            ("workflow", "step", "outcome"),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        # Bound once per (workflow, step, outcome): labels() costs more than the observation, and a request
        # observes every step.
        self._step_children: dict[tuple[str, str, str], Histogram] = {}
        self.degraded = Counter(
            "quasar_degraded_total",
            "Degraded answers by the step that failed open or fell back.",
            ("workflow", "step"),
            registry=self.registry,
        )
        self.in_flight_rejected = Counter(
            "quasar_admission_rejected_total",
            "Requests rejected because the gateway was at its in-flight limit or draining.",
            ("reason",),
            registry=self.registry,
        )
        # Per release arm (stable | canary | validation): what an experiment compares.
        self.arm_requests = Counter(
            "quasar_arm_requests_total",
            "Requests served by a release, by arm and outcome (ok, degraded, or a gRPC code).",
            ("release", "arm", "outcome"),
            registry=self.registry,
        )
        self.arm_seconds = Histogram(
            "quasar_arm_request_seconds",
            "Latency of the requests a release served, by arm.",
            ("release", "arm"),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.arm_score = Histogram(
            "quasar_arm_mean_score",
            "Mean final score of the items a release returned per request, by arm.",
            ("release", "arm"),
            buckets=(-1.0, 0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
            registry=self.registry,
        )

    def observe_arm(self, release: str, arm: str, outcome: str, seconds: float, mean_score: float | None) -> None:
        self.arm_requests.labels(release, arm, outcome).inc()
        self.arm_seconds.labels(release, arm).observe(seconds)
        if mean_score is not None:
            self.arm_score.labels(release, arm).observe(mean_score)

    def observe_step(self, workflow: str, step: str, outcome: str, seconds: float) -> None:
        key = (workflow, step, outcome)
        child = self._step_children.get(key)
        if child is None:
            child = self._step_children[key] = self.step_seconds.labels(workflow, step, outcome)
        child.observe(seconds)
