"""AdminService servicer: routes read and changed at run time, behind a bearer token."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import grpc

from engines import Router
from gateway.route_changes import LocalRouteChanges, RouteChanges
from gateway.route_merge import parse_routes, routes_json, routes_version
from gateway.status import Aborter, unauthenticated
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
    ) -> None:
        """`aborter`: the server's one abort path (default: a private one)."""
        if not token:
            raise ValueError("an admin token must not be empty")
        self._router = router
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
        routes = self._router.routes
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

    def _authorize(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Raises UNAUTHENTICATED unless the call carries the bearer token."""
        presented = dict(context.invocation_metadata() or ()).get("authorization", "")
        value = presented.encode() if isinstance(presented, str) else presented
        # Constant time, so the comparison does not tell how much of a guessed token was right.
        if not hmac.compare_digest(value, self._expected):
            raise unauthenticated("admin calls need metadata 'authorization: Bearer <admin token>'")
