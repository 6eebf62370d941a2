"""Wires one Quasar application from settings: store, engines, router, corpus, workflows.

`FeedApp` is also the in-process entry point to a workflow (no gRPC), used by benchmarks to measure
the floor under the gateway. Constructing it does no I/O; `start()` loads and connects everything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from engines import Offloader, Router, build_engines
from engines.config import EnginesConfig, OnnxEngineConfig, RouteConfig, TargetConfig, XGBoostEngineConfig
from engines.route_metrics import RouteMetrics
from features import check_views, load_registry
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from kvstore.config import EmbeddedStoreConfig, build_store
from remix import Context, Corpus, Services, StepRegistry, StepType, Workflow, load_workflows, run_workflow
from remix.candidates import Candidates
from remix.request import FeedRequest
from remix.steps import FEED, builtin_step_types

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedAnswer:
    context: Context
    feed: Candidates
    workflow_version: str


def default_engines_config(world_dir: Path) -> EnginesConfig:
    """In-process engines over the demo world's models: ONNX second pass, XGBoost first pass."""
    models = world_dir / "models"
    return EnginesConfig(
        engines={
            "local_onnx": OnnxEngineConfig(
                kind="onnx",
                models={"feed_ranker": models / "ranker.onnx", "feed_ranker_whole": models / "ranker_whole.onnx"},
            ),
            "local_xgboost": XGBoostEngineConfig(kind="xgboost", models={"first_pass": models / "first_pass.ubj"}),
        },
        routes={
            "feed_ranker": RouteConfig(targets=[TargetConfig(engine="local_onnx", model="feed_ranker")]),
            "feed_ranker_whole": RouteConfig(targets=[TargetConfig(engine="local_onnx", model="feed_ranker_whole")]),
            "first_pass": RouteConfig(targets=[TargetConfig(engine="local_xgboost", model="first_pass")]),
        },
    )


def builtin_workflows_dir() -> Path:
    return Path(str(resources.files("remix") / "workflows"))


class FeedApp:
    def __init__(
        self,
        settings: GatewaySettings,
        metrics: GatewayMetrics | None = None,
        *,
        extra_step_types: Sequence[StepType[Any]] = (),
    ) -> None:
        """`extra_step_types` are registered beside the built-ins, so custom workflows can name them."""
        self.settings = settings
        self._extra_step_types = tuple(extra_step_types)
        self.metrics = metrics or GatewayMetrics()
        self._offloader = Offloader(max_workers=settings.offload_workers, max_pending=settings.offload_max_pending)
        engines_config = settings.engines or default_engines_config(settings.world_dir)
        self._router = Router(
            engines_config.routes,
            build_engines(engines_config, self._offloader),
            metrics=RouteMetrics(self.metrics.registry),
        )
        store_config = settings.store or EmbeddedStoreConfig(root=settings.world_dir / "store")
        self._store = build_store(
            store_config, registry=self.metrics.registry, manifest=settings.world_dir / "world.json"
        )
        self._workflows: dict[str, Workflow] = {}

    @property
    def workflow_names(self) -> frozenset[str]:
        return frozenset(self._workflows)

    @property
    def router(self) -> Router:
        return self._router

    async def start(self) -> None:
        """Load the corpus and workflows, start the store and every engine. Raises on any bad config."""
        started = time.perf_counter()
        corpus = Corpus.load(self.settings.world_dir / "corpus")
        services = Services(models=self._router, store=self._store, corpus=corpus, clock=time.monotonic)
        registry = StepRegistry([*builtin_step_types(), *self._extra_step_types])
        workflows_dir = self.settings.workflows_dir or builtin_workflows_dir()
        self._workflows = load_workflows(workflows_dir, registry, services, answer=FEED)
        await self._store.start()
        await self._check_declared_features()
        await self._router.start()
        log.info(
            "quasar app started",
            extra={"workflows": sorted(self._workflows), "startup_ms": round((time.perf_counter() - started) * 1e3)},
        )

    async def _check_declared_features(self) -> None:
        """The world's feature views (`<world_dir>/features/*.yaml`, when present) must match the store:
        a missing table, another dtype or width fails startup naming the declaration and the table."""
        features_dir = self.settings.world_dir / "features"
        if features_dir.is_dir():
            await check_views(load_registry(features_dir), {"default": self._store})

    async def ready(self) -> bool:
        return bool(self._workflows) and await self._router.ready()

    async def get_feed(self, request: FeedRequest, *, timeout_s: float | None) -> FeedAnswer:
        """Run the request's workflow under one deadline: min(timeout_s, the workflow's default)."""
        workflow = self._workflows[request.workflow]
        ctx = await run_workflow(workflow, request, timeout_s=timeout_s)
        self._observe(workflow.name, ctx)
        return FeedAnswer(context=ctx, feed=ctx.get(FEED), workflow_version=workflow.version)

    def _observe(self, workflow: str, ctx: Context) -> None:
        for entry in ctx.trace.entries:
            self.metrics.step_seconds.labels(workflow, entry.name, entry.outcome.value).observe(entry.elapsed_ms / 1e3)
        for failure in ctx.failures:
            self.metrics.degraded.labels(workflow, failure.step).inc()

    async def close(self) -> None:
        await self._router.close()
        await self._store.close()
        self._offloader.close()
