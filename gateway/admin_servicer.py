"""AdminService servicer: routes read and changed at run time, behind a bearer token."""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Callable
from typing import Any

import grpc

from engines import Router
from gateway.release_changes import LocalReleaseChanges, ReleaseChanges
from gateway.release_plan import ReleasePlan, ReleasePlans
from gateway.releases import ReleaseManager, ReleaseRejected
from gateway.route_changes import LocalRouteChanges, RouteChanges, without_release_routes
from gateway.route_merge import parse_routes, routes_json, routes_version
from gateway.status import Aborter, failed_precondition, invalid_argument, unauthenticated, unimplemented
from quasar.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["AdminServicer", "routes_json", "routes_version"]

log = logging.getLogger(__name__)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Every call needs `authorization: Bearer <token>`. Changes go through `changes`: serialised in this
    process (`LocalRouteChanges`, the default), or applied to every worker before the answer
    (`ClusterRouteChanges`, under `quasar serve --workers N`)."""

    def __init__(
        self,
        router: Router,
        token: str,
        *,
        aborter: Aborter | None = None,
        changes: RouteChanges | None = None,
        releases: ReleaseManager | None = None,
        release_changes: ReleaseChanges | None = None,
    ) -> None:
        """`aborter`: the server's one abort path (default: a private one). `releases`: this process's
        release manager (release calls get UNIMPLEMENTED without one); `release_changes` how a change
        reaches every worker (default: this process only)."""
        if not token:
            raise ValueError("an admin token must not be empty")
        self._router = router
        self._releases = releases
        self._release_changes = release_changes or (LocalReleaseChanges(releases) if releases else None)
        self._expected = f"Bearer {token}".encode()
        self._changes = changes or LocalRouteChanges(router)
        self._aborter = aborter or Aborter()

    async def GetRoutes(
        self, request: admin_pb2.GetRoutesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.GetRoutesResponse:
        try:
            self._authorize(context)
        except Exception as error:
            await self._aborter.abort(context, error, method="GetRoutes")
        routes = without_release_routes(self._router.routes)  # a release's routes change with `deploy` only
        return admin_pb2.GetRoutesResponse(
            routes_json=routes_json(routes),
            engines=sorted(self._router.engine_names),
            version=routes_version(routes),
        )

    async def SetRoutes(
        self, request: admin_pb2.SetRoutesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.SetRoutesResponse:
        try:
            self._authorize(context)
            updates = parse_routes(request.routes)
            change = await self._changes.apply(
                updates, request.remove, expected_version=request.expected_version, dry_run=request.dry_run
            )
        except Exception as error:
            await self._aborter.abort(context, error, method="SetRoutes")
        version = routes_version(change.after)
        if not request.dry_run:
            log.warning("routes changed", extra={"version": version, "changed": change.changed})
        return admin_pb2.SetRoutesResponse(
            routes_json=routes_json(change.after), version=version, changed=change.changed
        )

    async def ApplyRelease(
        self, request: admin_pb2.ApplyReleaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ReleaseStatus:
        try:
            self._authorize(context)
            changes = self._changes_or_unimplemented()
            if not request.manifest_path:
                raise invalid_argument("manifest_path is empty: name the release manifest on the gateway")
            if not 0.0 <= request.canary_percent <= 100.0 or not math.isfinite(request.canary_percent):
                raise invalid_argument(f"canary_percent must be in (0, 100], got {request.canary_percent}")
            manifest = request.manifest_path
            if not manifest.startswith("/"):
                raise invalid_argument("manifest_path must be absolute (the gateway's working directory is not yours)")
            change = await changes.apply(manifest, canary_share=request.canary_percent / 100.0, dry_run=request.dry_run)
        except ReleaseRejected as error:
            await self._aborter.abort(context, failed_precondition(str(error)), method="ApplyRelease")
        except Exception as error:
            await self._aborter.abort(context, error, method="ApplyRelease")
        if not request.dry_run:
            log.warning("release applied", extra={"model": change.model, "releases": change.plans.manifests})
        return _status(change.plans, change.report, self._name_of, changed=change.model)

    async def RollbackRelease(
        self, request: admin_pb2.RollbackReleaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ReleaseStatus:
        try:
            self._authorize(context)
            change = await self._changes_or_unimplemented().rollback(request.model or None)
        except ReleaseRejected as error:
            await self._aborter.abort(context, failed_precondition(str(error)), method="RollbackRelease")
        except Exception as error:
            await self._aborter.abort(context, error, method="RollbackRelease")
        log.warning("release rolled back", extra={"model": change.model, "releases": change.plans.manifests})
        return _status(change.plans, [], self._name_of, changed=change.model)

    async def GetReleases(
        self, request: admin_pb2.GetReleasesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ReleaseStatus:
        try:
            self._authorize(context)
            self._changes_or_unimplemented()
        except Exception as error:
            await self._aborter.abort(context, error, method="GetReleases")
        assert self._releases is not None
        return _status(self._releases.plans, [], self._name_of)

    def _name_of(self, manifest: str | None) -> str:
        return "" if self._releases is None else self._releases.name_of(manifest)

    def _changes_or_unimplemented(self) -> ReleaseChanges:
        if self._release_changes is None:
            raise unimplemented("this gateway serves no releases")
        return self._release_changes

    def _authorize(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Raises UNAUTHENTICATED unless the call carries the bearer token."""
        presented = dict(context.invocation_metadata() or ()).get("authorization", "")
        value = presented.encode() if isinstance(presented, str) else presented
        # Constant time, so the comparison does not tell how much of a guessed token was right.
        if not hmac.compare_digest(value, self._expected):
            raise unauthenticated("admin calls need metadata 'authorization: Bearer <admin token>'")


def _line(model: str, plan: ReleasePlan, name_of: Callable[[str | None], str]) -> admin_pb2.ReleaseLine:
    return admin_pb2.ReleaseLine(
        model=model,
        stable=name_of(plan.stable),
        stable_manifest=plan.stable or "",
        canary=name_of(plan.canary),
        canary_manifest=plan.canary or "",
        canary_percent=plan.canary_share * 100.0,
        history=[name_of(p) for p in plan.history],
    )


def _status(
    plans: ReleasePlans, report: list[str], name_of: Callable[[str | None], str], *, changed: str | None = None
) -> admin_pb2.ReleaseStatus:
    checks = []
    for line in report:
        verdict, name, detail = [*line.split("\t", 2), "", ""][:3]
        checks.append(admin_pb2.ReleaseCheck(name=name, ok=verdict == "ok", detail=detail))
    status = admin_pb2.ReleaseStatus(
        lines=[_line(model, plan, name_of) for model, plan in sorted(plans.lines.items())], checks=checks
    )
    if changed is not None:
        status.changed.CopyFrom(_line(changed, plans.line(changed), name_of))
    return status
