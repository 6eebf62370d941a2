"""The releases in force in one gateway process, and how they change.

A change has two phases, so `--workers N` can run the first on every worker before any runs the second:
`prepare(plan)` loads every release the plan names that this process has not loaded yet (its artifacts
into their engines, its route installed under `<model>@<release>` beside the routes in force), and
validates it; nothing serves it yet. `commit(plan)` then switches with one assignment: a request takes
its `Serving` (release, arm, table pins, model routes) once, when it starts, so it is served by one
release from start to end, and a release's tables, pins and routes change together.

Assignment to the canary is sticky per member: `engines.assignment`, the one mechanism that also splits a
route's weighted targets and experiment buckets, salted apart so canary membership is independent of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from engines import Router
from engines.assignment import assignment_point
from engines.base import Engine, LoadsModels
from engines.errors import EngineError
from features import FeatureRegistry, ModelSignature
from gateway.release_manifest import Release, ReleaseError, load_release
from gateway.release_plan import ReleasePlan, read_plan
from gateway.release_validation import (
    Check,
    ValidationReport,
    WarmUp,
    check_engines,
    check_indexes,
    check_sample,
    check_signature,
    check_tables,
    check_warmup,
)
from kvstore.base import EmbeddingStore
from kvstore.pinning import PinnedStore
from remix.context import NO_RELEASE, Serving

log = logging.getLogger(__name__)

CANARY_SALT = "release canary"


class ReleaseRejected(Exception):
    """A release that cannot serve: unreadable, or failing validation (`report` says which checks)."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class InForce:
    """What serves now: precomputed `Serving` values, so a request only picks one."""

    plan: ReleasePlan
    stable: Serving = NO_RELEASE
    canary: Serving | None = None

    def serving(self, member_id: int) -> Serving:
        if self.canary is not None and assignment_point(CANARY_SALT, member_id) < self.plan.canary_share:
            return self.canary
        return self.stable


def serving_of(release: Release, arm: str) -> Serving:
    return Serving(
        release=release.name,
        arm=arm,
        table_pins=MappingProxyType(dict(release.decl.tables)),
        model_routes=MappingProxyType({release.model: release.route_name}),
    )


class ReleaseManager:
    """Loads, validates and switches releases in this process. `serving(member_id)` is the request path's
    one call (no I/O, no lock). Changes are serialised by the caller: `LocalReleaseChanges` in one
    process, the supervisor with workers."""

    def __init__(
        self,
        *,
        router: Router,
        engines: Mapping[str, Engine],
        stores: Mapping[str, EmbeddingStore],
        registry: FeatureRegistry,
        signatures: Mapping[str, ModelSignature],
        load_signature: Callable[[Path], ModelSignature],
        state_dir: Path | None,
        warm_up: WarmUp | None = None,
        index_root: Path | None = None,
    ) -> None:
        self._router = router
        self._engines = engines
        self._stores = stores
        self._registry = registry
        self._signatures = signatures
        self._load_signature = load_signature
        self.state_dir = state_dir
        self._warm_up = warm_up
        self._index_root = index_root
        self._prepared: dict[str, Release] = {}
        self._in_force = InForce(ReleasePlan())
        self._pinned = [s for s in stores.values() if isinstance(s, PinnedStore)]

    # -- the request path ------------------------------------------------------------------------------

    def serving(self, member_id: int) -> Serving:
        return self._in_force.serving(member_id)

    @property
    def plan(self) -> ReleasePlan:
        return self._in_force.plan

    def name_of(self, manifest: str | None) -> str:
        """The release a manifest path names ("" for None; the file's stem when this process never read it,
        e.g. an old history entry)."""
        if manifest is None:
            return ""
        known = self._prepared.get(manifest)
        return known.name if known is not None else Path(manifest).stem

    def release(self, name: str) -> Release | None:
        return next((r for r in self._prepared.values() if r.name == name), None)

    # -- changes ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the plan saved in the state directory (a gateway restarted keeps its releases)."""
        plan = read_plan(self.state_dir)
        if plan.manifests:
            await self.prepare(plan)
            self.commit(plan)
            log.info("releases restored", extra={"stable": plan.stable, "canary": plan.canary})

    async def validate(self, release: Release) -> ValidationReport:
        """Every check of `release` (its artifacts must be loaded: see `prepare`)."""
        signature = self._signatures.get(release.model)
        if signature is None:
            return ValidationReport(
                release.name, (Check("signature", False, f"the gateway declares no model {release.model!r}"),)
            )
        checks = [check_signature(release, signature, self._load_signature)]
        checks += await check_tables(release, self._registry, self._stores, signature)
        checks += check_indexes(release, self._index_root)
        checks += await check_engines(release, self._engines, signature)
        checks += await check_sample(release, self._engines, signature)
        if all(check.ok for check in checks):  # warm-up requests only for a release that can serve
            await self._install_route(release)  # warm-up requests are served by the release's route
            checks.append(await check_warmup(release, self._warm_up))
        return ValidationReport(release.name, tuple(checks))

    async def prepare(self, plan: ReleasePlan, *, validate: Sequence[str] = ()) -> list[ValidationReport]:
        """Load what `plan` names and this process has not loaded; validate the new ones and those in
        `validate` (manifest paths). Raises `ReleaseRejected` when one cannot serve."""
        reports = []
        for manifest in plan.manifests:
            known = self._prepared.get(manifest)
            if known is not None and manifest not in validate:
                continue
            # Re-read when asked to validate: the file may have changed since it was last applied.
            release = self._read(manifest) if known is None or manifest in validate else known
            await self.load_artifacts(release)
            report = await self.validate(release)
            reports.append(report)
            if not report.ok:
                routes = self._router.routes
                if known is None and release.route_name in routes:  # installed for the warm-up only
                    routes.pop(release.route_name)
                    await self._router.swap_routes(routes)
                raise ReleaseRejected(f"release {release.name} failed validation: {report.failures()}", report)
            self._prepared[manifest] = release
        return reports

    def commit(self, plan: ReleasePlan) -> None:
        """Switch to `plan` (prepared) with one assignment; allow its table pins in the pinned stores."""
        stable = self._prepared[plan.stable] if plan.stable else None
        canary = self._prepared[plan.canary] if plan.canary else None
        allowed: dict[str, set[str]] = {}
        for release in (stable, canary):
            for table, version in release.decl.tables.items() if release else ():
                allowed.setdefault(table, set()).add(version)
        for store in self._pinned:  # before the switch: a request of the new release must pass the check
            store.allow_released({table: frozenset(versions) for table, versions in allowed.items()})
        self._in_force = InForce(
            plan,
            stable=serving_of(stable, "stable") if stable else NO_RELEASE,
            canary=serving_of(canary, "canary") if canary else None,
        )

    def _read(self, manifest: str) -> Release:
        try:
            return load_release(Path(manifest))
        except ReleaseError as error:
            raise ReleaseRejected(str(error)) from None

    async def load_artifacts(self, release: Release) -> None:
        """Load the release's model files into their in-process engines (validation needs them loaded)."""
        for engine_name in release.decl.artifacts:
            path = release.file(engine_name)
            engine = self._engines.get(engine_name)
            if path is None or engine is None:
                continue  # a model server's artifact, or an unknown engine (validation reports it)
            if not isinstance(engine, LoadsModels):
                raise ReleaseRejected(f"engine {engine_name!r} cannot load model files; name its served `model`")
            try:
                await engine.load_model(release.served_name(engine_name), path)
            except EngineError as error:
                raise ReleaseRejected(f"release {release.name}: {error}") from None

    async def _install_route(self, release: Release) -> None:
        routes = self._router.routes
        route = release.route()
        if routes.get(release.route_name) == route:
            return
        try:
            await self._router.swap_routes({**routes, release.route_name: route})
        except (ValueError, EngineError) as error:
            raise ReleaseRejected(f"release {release.name}: its route cannot serve: {error}") from None


def report_lines(reports: Sequence[ValidationReport]) -> list[str]:
    """`ok|FAIL <check>: <detail>` per check, as JSON-able strings."""
    return [f"{'ok' if c.ok else 'FAIL'}\t{c.name}\t{c.detail}" for r in reports for c in r.checks]
