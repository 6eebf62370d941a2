"""AdminService servicer: routes read and changed at run time, behind a bearer token."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

import grpc

from engines import Router
from engines.errors import EngineError
from gateway.route_merge import merge_routes, parse_routes, routes_json, routes_version
from gateway.status import Aborter, aborted, failed_precondition, invalid_argument, unauthenticated
from quasar.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["AdminServicer", "routes_json", "routes_version"]

log = logging.getLogger(__name__)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Every call needs `authorization: Bearer <token>`. Changes are serialised (one lock), so a
    read-merge-swap never loses a concurrent one; the swap itself is `Router.swap_routes`."""

    def __init__(self, router: Router, token: str, *, aborter: Aborter | None = None) -> None:
        """`aborter`: the server's one abort path (default: a private one)."""
        if not token:
            raise ValueError("an admin token must not be empty")
        self._router = router
        self._expected = f"Bearer {token}".encode()
        self._lock = asyncio.Lock()
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
            async with self._lock:
                current = self._router.routes
                if request.expected_version and request.expected_version != routes_version(current):
                    raise aborted(
                        f"routes are at version {routes_version(current)}, not {request.expected_version}: "
                        "read them again and retry"
                    )
                new = merge_routes(current, updates, request.remove)
                try:
                    if request.dry_run:
                        await self._router.check_routes(new)
                    else:
                        await self._router.swap_routes(new)
                except ValueError as error:
                    raise invalid_argument(str(error)) from None
                except EngineError as error:
                    raise failed_precondition(str(error)) from None
        except Exception as error:
            await self._aborter.abort(context, error, method="SetRoutes")
        changed = sorted(name for name in current.keys() | new.keys() if current.get(name) != new.get(name))
        version = routes_version(new)
        if not request.dry_run:
            log.warning("routes changed", extra={"version": version, "changed": changed})
        return admin_pb2.SetRoutesResponse(routes_json=routes_json(new), version=version, changed=changed)

    def _authorize(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Raises UNAUTHENTICATED unless the call carries the bearer token."""
        presented = dict(context.invocation_metadata() or ()).get("authorization", "")
        value = presented.encode() if isinstance(presented, str) else presented
        # Constant time, so the comparison does not tell how much of a guessed token was right.
        if not hmac.compare_digest(value, self._expected):
            raise unauthenticated("admin calls need metadata 'authorization: Bearer <admin token>'")
