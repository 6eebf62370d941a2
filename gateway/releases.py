"""The releases in force in one gateway process, and how they change.

A change has two phases, so `--workers N` can run the first on every worker before any runs the second:
`prepare(plans)` loads every release the plans name that this process has not loaded yet (its artifacts
into their engines, its route installed under `<model>@<release>` beside the routes in force), and
validates it; nothing serves it yet. `commit(plans)` then switches with one assignment: a request takes
its `Serving` (release, arm, table pins, model routes) once, when it starts, so it is served by one
release from start to end, and a release's tables, pins and routes change together.

Assignment to the canary is sticky per member: `engines.assignment`, the one mechanism that also splits a
route's weighted targets and experiment buckets, salted apart so canary membership is independent of them.
"""

from __future__ import annotations

import itertools
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
from gateway.release_plan import ReleasePlans, read_plans
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
class Line:
    """One logical model's releases in force: its stable release, and a canary for `share` of members."""

    model: str
    stable: Release | None
    canary: Release | None = None
    share: float = 0.0


class InForce:
    """What serves now, as precomputed `Serving` values (one per combination of canary arms, a handful),
    so a request only computes its canary assignments and picks one."""

    def __init__(self, plans: ReleasePlans, lines: Sequence[Line] = ()) -> None:
        self.plans = plans
        self._canaried = tuple(line for line in lines if line.canary is not None and line.share > 0)
        # (salt, share) per canaried line: the salt keeps each line's canary independent of the others'.
        self._draws = tuple((f"{CANARY_SALT} {line.model}", line.share) for line in self._canaried)
        self._servings: dict[tuple[bool, ...], Serving] = {}
        for arms in itertools.product((False, True), repeat=len(self._canaried)):
            canary = {line.model for line, on in zip(self._canaried, arms, strict=True) if on}
            chosen: list[tuple[Release, str]] = []
            for line in lines:
                release, arm = (line.canary, "canary") if line.model in canary else (line.stable, "stable")
                if release is not None:
                    chosen.append((release, arm))
            self._servings[arms] = serving_of(chosen)

    @property
    def stable(self) -> Serving:
        """What a member outside every canary is served."""
        return self._servings[(False,) * len(self._canaried)]

    def serving(self, member_id: int) -> Serving:
        if not self._canaried:
            return self._servings[()]
        return self._servings[tuple(assignment_point(salt, member_id) < share for salt, share in self._draws)]


def serving_of(chosen: Sequence[tuple[Release, str]]) -> Serving:
    """The `Serving` of these (release, arm) pairs, one per release line."""
    if not chosen:
        return NO_RELEASE
    pins: dict[str, str] = {}
    for release, _arm in chosen:
        pins.update(release.decl.tables)
    names = sorted((release.name, arm) for release, arm in chosen)
    return Serving(
        release=",".join(name for name, _ in names),
        arm=",".join(arm for _, arm in names),
        table_pins=MappingProxyType(pins),
        model_routes=MappingProxyType({release.model: release.route_name for release, _ in chosen}),
        model_releases=MappingProxyType({release.model: (release.name, arm) for release, arm in chosen}),
    )


def pin_conflicts(releases: Sequence[Release]) -> list[str]:
    """Releases of different models that may serve one request together must pin every table they share
    at one version; one message per table pinned two ways."""
    problems = []
    for i, first in enumerate(releases):
        for second in releases[i + 1 :]:
            if first.model == second.model:
                continue  # a line's stable and canary never serve one request together
            for table in sorted(first.decl.tables.keys() & second.decl.tables.keys()):
                a, b = first.decl.tables[table], second.decl.tables[table]
                if a != b:
                    problems.append(
                        f"table {table} is pinned at {a} by {first.name} ({first.model}) and at {b} by "
                        f"{second.name} ({second.model})"
                    )
    return problems


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
        self._in_force = InForce(ReleasePlans())
        self._pinned = [s for s in stores.values() if isinstance(s, PinnedStore)]

    # -- the request path ------------------------------------------------------------------------------

    def serving(self, member_id: int) -> Serving:
        return self._in_force.serving(member_id)

    @property
    def plans(self) -> ReleasePlans:
        return self._in_force.plans

    @property
    def stable_pins(self) -> Mapping[str, str]:
        """The table versions the stable releases pin (what most requests read)."""
        return self._in_force.stable.table_pins

    def read(self, manifest: str) -> Release:
        """A manifest read (ReleaseRejected when it cannot be)."""
        return self._read(manifest)

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
        """Serve the plans saved in the state directory (a gateway restarted keeps its releases)."""
        plans = read_plans(self.state_dir)
        if plans.manifests:
            await self.prepare(plans)
            self.commit(plans)
            log.info("releases restored", extra={"releases": plans.manifests})

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
            self._allow([*self._in_force_releases(), release])  # and read its pinned versions
            try:
                checks.append(await check_warmup(release, self._warm_up))
            finally:
                self._allow(self._in_force_releases())
        return ValidationReport(release.name, tuple(checks))

    async def prepare(self, plans: ReleasePlans, *, validate: Sequence[str] = ()) -> list[ValidationReport]:
        """Load what `plans` name and this process has not loaded; validate the new ones and those in
        `validate` (manifest paths). Raises `ReleaseRejected` when one cannot serve, is filed under another
        model's line, or pins a table another line's release pins at another version."""
        reports = []
        for model, plan in plans.lines.items():
            for manifest in plan.manifests:
                known = self._prepared.get(manifest)
                if known is not None and manifest not in validate:
                    continue
                # Read again when asked to validate: the file may have changed since it was last applied.
                release = self._read(manifest)
                if release.model != model:
                    raise ReleaseRejected(f"release {release.name} serves {release.model}, not {model}")
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
        conflicts = pin_conflicts([self._prepared[m] for m in plans.manifests])
        if conflicts:
            raise ReleaseRejected("; ".join(conflicts))
        return reports

    def commit(self, plans: ReleasePlans) -> None:
        """Switch to `plans` (prepared) with one assignment; allow their table pins in the pinned stores."""
        lines = []
        for model, plan in sorted(plans.lines.items()):
            stable = self._prepared[plan.stable] if plan.stable else None
            canary = self._prepared[plan.canary] if plan.canary else None
            lines.append(Line(model, stable, canary, plan.canary_share))
        # Before the switch: a request of the new releases must pass the pinned stores' check.
        self._allow([r for line in lines for r in (line.stable, line.canary) if r is not None])
        self._in_force = InForce(plans, lines)

    def _in_force_releases(self) -> list[Release]:
        return [self._prepared[m] for m in self.plans.manifests if m in self._prepared]

    def _allow(self, releases: Sequence[Release]) -> None:
        """The pinned stores accept reads at the table versions these releases pin (and nothing else
        beyond their own manifest's pins)."""
        allowed: dict[str, set[str]] = {}
        for release in releases:
            for table, version in release.decl.tables.items():
                allowed.setdefault(table, set()).add(version)
        for store in self._pinned:
            store.allow_released({table: frozenset(versions) for table, versions in allowed.items()})

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
