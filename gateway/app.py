"""Wires one Quasar application from settings and a deployment directory (`gateway.deployment`): store,
engines, router, feature registry, model signatures, workflows.

`FeedApp` is also the in-process entry point to a workflow (no gRPC), used by benchmarks to measure
the floor under the gateway. Constructing it does no I/O; `start()` loads and connects everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines import Offloader, Router, build_engines
from engines.candidate_client import GrpcCandidateClient
from engines.route_metrics import RouteMetrics
from engines.shadow_diff import ShadowDiff
from features import (
    FeatureRegistry,
    ModelSignature,
    check_signature_widths,
    check_views,
    load_registry,
    load_signature,
    load_signatures,
)
from features.declarations import KEY_REQUEST
from gateway.artifact_age import ArtifactAges
from gateway.capture import CaptureWriter
from gateway.deployment import Deployment
from gateway.metrics import GatewayMetrics
from gateway.release_manifest import Release
from gateway.releases import ReleaseManager, serving_of
from gateway.settings import GatewaySettings
from health.monitor import HealthMonitor
from health.offline import OfflineStats, load_offline_stats
from kvstore.base import EmbeddingStore
from kvstore.config import EmbeddedStoreConfig, build_store
from remix import Context, StepRegistry, StepType, Workflow, load_workflows, run_workflow
from remix.context import NO_RELEASE, Serving
from remix.request import FeedRequest
from remix.steps import FEED, Candidates, Resources, Services, builtin_step_types
from remix.steps.remote import RemoteCandidates
from remix.steps.services import DEFAULT_STORE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedAnswer:
    context: Context
    feed: Candidates
    workflow_version: str


class FeedApp:
    def __init__(
        self,
        settings: GatewaySettings,
        metrics: GatewayMetrics | None = None,
        *,
        extra_step_types: Sequence[StepType[Any]] = (),
        worker: str = "0",
    ) -> None:
        """`extra_step_types` are registered beside the built-ins, so custom workflows can name them.
        `worker`: this process's index under `--workers N` (names its health sketches and capture files;
        worker "0" writes the shared drift history)."""
        self.settings = settings
        self._extra_step_types = tuple(extra_step_types)
        self.metrics = metrics or GatewayMetrics()
        self._offloader = Offloader(max_workers=settings.offload_workers, max_pending=settings.offload_max_pending)
        self.deployment = Deployment(settings.world_dir)
        engines_config = settings.engines or self.deployment.engines_config()
        self._engines = build_engines(engines_config, self._offloader)
        self._router = Router(
            engines_config.routes,
            self._engines,
            metrics=RouteMetrics(self.metrics.registry),
            on_diff=self._on_shadow_diff,
        )
        self._candidate_services: dict[str, GrpcCandidateClient] = {
            name: config.build(name) for name, config in engines_config.candidate_services.items()
        }
        store_config = settings.store or EmbeddedStoreConfig(root=self.deployment.store_root)
        self._store = build_store(store_config, registry=self.metrics.registry, manifest=self.deployment.manifest)
        self._stores: dict[str, EmbeddingStore] = {DEFAULT_STORE: self._store}
        for name, config in settings.stores.items():
            if name == DEFAULT_STORE:
                raise ValueError(f"stores.{name}: {DEFAULT_STORE!r} is the main store (`store`); name it otherwise")
            # A registry of its own: the store metrics are declared per registry, once (the main store's).
            self._stores[name] = build_store(config, name=name)
        self._resources = Resources()
        self._workflows: dict[str, Workflow] = {}
        self._releases: ReleaseManager | None = None
        self._health: HealthMonitor | None = None
        self._artifact_ages: ArtifactAges | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._worker = worker
        self._capture = CaptureWriter(settings.capture, self.metrics.registry, self._worker)
        self._offline_cache: dict[Path, dict[str, OfflineStats]] = {}
        self._request_entities: frozenset[str] = frozenset()

    @property
    def workflow_names(self) -> frozenset[str]:
        return frozenset(self._workflows)

    @property
    def router(self) -> Router:
        return self._router

    @property
    def releases(self) -> ReleaseManager:
        if self._releases is None:
            raise RuntimeError("the application is not started")
        return self._releases

    async def start(self) -> None:
        """Load declarations and workflows, start the store, every engine and what steps hold, and check
        declarations against them. Raises on any bad configuration, naming the file and key path."""
        started = time.perf_counter()
        deployment = self.deployment
        registry = load_registry(deployment.features_dir)
        signatures = load_signatures(deployment.models_dir, registry)
        services = Services(
            models=self._router,
            stores=self._stores,
            registry=registry,
            signatures=signatures,
            clock=time.monotonic,
            wall_clock=time.time if self.settings.feature_time_s is None else _pinned(self.settings.feature_time_s),
            resources=self._resources,
            index_root=deployment.index_root,
            candidate_services=self._candidate_services,
        )
        steps = StepRegistry([*builtin_step_types(), *self._extra_step_types])
        workflows_dir = self.settings.workflows_dir or deployment.workflows_dir
        self._workflows = load_workflows(workflows_dir, steps, services, answer=FEED)
        for store in self._stores.values():
            await store.start()
        await check_views(registry, self._stores)
        await self._router.start()
        routes = self._router.routes
        for model, signature in signatures.items():
            if model in routes:
                metadata = await self._router.metadata(model)
                check_signature_widths(signature, {f"route {model}": {s.name: s.shape for s in metadata.inputs}})
        for client in self._candidate_services.values():
            await client.start()
        await self._resources.start()
        self._releases = ReleaseManager(
            router=self._router,
            engines=self._engines,
            stores=self._stores,
            registry=registry,
            signatures=signatures,
            load_signature=lambda path: load_signature(path, registry),
            state_dir=self.settings.state_dir,
            warm_up=self._warm_up,
            index_root=deployment.index_root,
        )
        await self._releases.start()
        for model, signature in signatures.items():
            if model in routes:
                self._router.describe_outputs(model, {o: list(h) for o, h in signature.outputs.items()})
        await self._start_health(registry, signatures)
        if self.settings.capture.rate > 0:
            self._capture.start()
        log.info(
            "quasar app started",
            extra={"workflows": sorted(self._workflows), "startup_ms": round((time.perf_counter() - started) * 1e3)},
        )

    async def _start_health(self, registry: FeatureRegistry, signatures: Mapping[str, ModelSignature]) -> None:
        self._request_entities = frozenset(n for n, e in registry.entities.items() if e.key == KEY_REQUEST)
        settings = self.settings
        health = settings.health
        if health.state_dir is None and settings.state_dir is not None:
            health = health.model_copy(update={"state_dir": settings.state_dir})
        if health.enabled:
            self._health = HealthMonitor(
                signatures,
                self._offline_stats,
                health,
                self.metrics.registry,
                worker=self._worker,
                request_entities=self.request_entities,
            )
            await self._health.start()
        self._artifact_ages = ArtifactAges(
            stores=self._stores,
            tables=registry.table_stores,
            index_root=self.deployment.index_root,
            pins=lambda: self.releases.stable_pins,
            max_table_age_s=settings.max_table_age_s,
            max_index_age_s=settings.max_index_age_s,
            registry=self.metrics.registry,
            wall_clock=time.time,
            state_dir=health.state_dir,
        )
        await self._artifact_ages.refresh()
        self._housekeeping = asyncio.create_task(self._refresh_ages(), name="artifact ages")

    async def _refresh_ages(self) -> None:
        assert self._artifact_ages is not None
        while True:
            await asyncio.sleep(self.settings.artifact_refresh_s)
            try:
                await self._artifact_ages.refresh()
            except Exception:  # never let housekeeping die silently, nor take the process with it
                log.exception("table and index ages could not be refreshed")

    def _offline_stats(self, model: str, release: str) -> OfflineStats | None:
        """The offline sketches the release's trainer wrote (None: no release, or none written)."""
        found = self._releases.release(release) if self._releases is not None and release else None
        path = found.offline_stats_path if found is not None else None
        if path is None:
            return None
        cached = self._offline_cache.get(path)
        if cached is None:  # a release's files do not change under its name: read once
            cached = self._offline_cache[path] = load_offline_stats(path)
        return cached.get(model)

    def _on_shadow_diff(self, diff: ShadowDiff) -> None:
        if self._health is not None:
            self._health.observe_shadow(diff)

    @property
    def request_entities(self) -> frozenset[str]:
        """The entities keyed by the request (the member's): their features are one value per request."""
        return self._request_entities

    @property
    def health(self) -> HealthMonitor | None:
        return self._health

    @property
    def capture(self) -> CaptureWriter:
        return self._capture

    async def ready(self) -> bool:
        return bool(self._workflows) and await self._router.ready()

    async def get_feed(
        self, request: FeedRequest, *, timeout_s: float | None, serving: Serving | None = None
    ) -> FeedAnswer:
        """Run the request's workflow under one deadline: min(timeout_s, the workflow's default), served
        by the release the member is assigned to (or `serving`, for warm-up requests)."""
        workflow = self._workflows[request.workflow]
        if serving is None:
            serving = NO_RELEASE if self._releases is None else self._releases.serving(request.member_id)
        ctx = await run_workflow(workflow, request, timeout_s=timeout_s, serving=serving)
        self._observe(workflow.name, ctx)
        feed = ctx.get(FEED)
        health = self._health
        if health is not None:  # O(1) each: a sampling draw and a bounded append; the work runs later
            for use in ctx.models:
                health.observe(use.model, serving.release_of(use.model), use.inputs, use.outputs)
        self._capture.offer(ctx, feed, workflow.version)
        return FeedAnswer(context=ctx, feed=feed, workflow_version=workflow.version)

    async def _warm_up(self, release: Release) -> list[float]:
        """A release's warm-up requests, served by it: the latency of each that called its model. Raises
        when the release's model failed in one (its call fell back, or its step failed over), or when no
        request called it. A request degraded by something else (another source down) still counts: the
        release is not what failed. Workflows that never call the model are left out."""
        validation = release.decl.validation
        workflows = [validation.workflow] if validation.workflow else sorted(self._workflows)
        serving = serving_of([(release, "validation")])
        latencies = []
        for i in range(validation.warmup_requests):
            workflow = workflows[i % len(workflows)]
            member = validation.warmup_members[i % len(validation.warmup_members)]
            started = time.perf_counter()
            answer = await self.get_feed(
                FeedRequest(request_id=f"warm-up-{i}", member_id=member, count=10, workflow=workflow),
                timeout_s=max(1.0, validation.warmup_budget_s * 4),
                serving=serving,
            )
            elapsed_s = time.perf_counter() - started
            ctx = answer.context
            if release.route_name in ctx.failed_routes:
                reasons = "; ".join(f.message for f in ctx.failures) or "its outputs were rejected"
                raise RuntimeError(f"workflow {workflow}: {release.model} failed: {reasons}")
            if any(use.route == release.route_name for use in ctx.models):
                latencies.append(elapsed_s)
        if validation.warmup_requests and not latencies:
            raise RuntimeError(f"no warm-up request called {release.model} (workflows: {', '.join(workflows)})")
        return latencies

    def _observe(self, workflow: str, ctx: Context) -> None:
        for entry in ctx.trace.entries:
            self.metrics.observe_step(workflow, entry.name, entry.outcome.value, entry.elapsed_ms / 1e3)
        for failure in ctx.failures:
            self.metrics.degraded.labels(workflow, failure.step).inc()

    async def close(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        if self._health is not None:
            await self._health.close()
        await asyncio.to_thread(self._capture.close)
        await self._resources.close()
        for client in self._candidate_services.values():
            await client.close()
        await self._router.close()
        for store in self._stores.values():
            await store.close()
        self._offloader.close()


def _pinned(time_s: float) -> Callable[[], float]:
    return lambda: time_s


if TYPE_CHECKING:
    _remote: type[RemoteCandidates] = GrpcCandidateClient
