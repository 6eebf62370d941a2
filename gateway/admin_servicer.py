"""AdminService servicer: routes read and changed at run time, behind a bearer token."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Collection, Mapping
from typing import Any

import grpc
import yaml
from pydantic import TypeAdapter, ValidationError

from engines import Router
from engines.config import RouteConfig
from engines.errors import EngineError
from gateway.status import RequestRejected, invalid_argument, to_status
from quasar.v1 import admin_pb2, admin_pb2_grpc

log = logging.getLogger(__name__)

_ROUTES = TypeAdapter(dict[str, RouteConfig])


def routes_json(routes: Mapping[str, RouteConfig]) -> str:
    """The canonical JSON of a route table: sorted keys, every field explicit."""
    return json.dumps({name: route.model_dump(mode="json") for name, route in routes.items()}, sort_keys=True)


def routes_version(routes: Mapping[str, RouteConfig]) -> str:
    """A content hash of the table: equal tables have equal versions, on any process."""
    return hashlib.sha256(routes_json(routes).encode()).hexdigest()[:16]


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Every call needs `authorization: Bearer <token>`. Changes are serialised (one lock), so a
    read-merge-swap never loses a concurrent one; the swap itself is `Router.swap_routes`."""

    def __init__(self, router: Router, token: str) -> None:
        if not token:
            raise ValueError("an admin token must not be empty")
        self._router = router
        self._expected = f"Bearer {token}".encode()
        self._lock = asyncio.Lock()

    async def GetRoutes(
        self, request: admin_pb2.GetRoutesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.GetRoutesResponse:
        await self._authorize(context)
        routes = self._router.routes
        return admin_pb2.GetRoutesResponse(
            routes_json=routes_json(routes),
            engines=sorted(self._router.engine_names),
            version=routes_version(routes),
        )

    async def SetRoutes(
        self, request: admin_pb2.SetRoutesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.SetRoutesResponse:
        await self._authorize(context)
        try:
            updates = _parse_routes(request.routes)
            async with self._lock:
                current = self._router.routes
                if request.expected_version and request.expected_version != routes_version(current):
                    raise RequestRejected(
                        grpc.StatusCode.ABORTED,
                        f"routes are at version {routes_version(current)}, not {request.expected_version}: "
                        "read them again and retry",
                    )
                new = _merged(current, updates, request.remove)
                try:
                    if request.dry_run:
                        await self._router.check_routes(new)
                    else:
                        await self._router.swap_routes(new)
                except ValueError as error:
                    raise invalid_argument(str(error)) from None
                except EngineError as error:
                    raise RequestRejected(grpc.StatusCode.FAILED_PRECONDITION, str(error)) from None
        except Exception as error:
            status = to_status(error, "-")
            if status.code is grpc.StatusCode.INTERNAL:
                log.exception("SetRoutes failed")
            await context.abort(status.code, status.message)
            raise AssertionError("unreachable: abort raises") from error
        changed = sorted(name for name in current.keys() | new.keys() if current.get(name) != new.get(name))
        version = routes_version(new)
        if not request.dry_run:
            log.warning("routes changed", extra={"version": version, "changed": changed})
        return admin_pb2.SetRoutesResponse(routes_json=routes_json(new), version=version, changed=changed)

    async def _authorize(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        presented = dict(context.invocation_metadata() or ()).get("authorization", "")
        value = presented.encode() if isinstance(presented, str) else presented
        # Constant time, so the comparison does not tell how much of a guessed token was right.
        if not hmac.compare_digest(value, self._expected):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "admin calls need metadata 'authorization: Bearer <admin token>'"
            )


def _parse_routes(text: str) -> dict[str, RouteConfig]:
    """YAML or JSON (YAML is a superset) mapping route names to RouteConfig; empty text: no routes."""
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as error:
        raise invalid_argument(f"routes are not valid YAML/JSON: {error}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise invalid_argument(f"routes must be a mapping of logical model name to route, got {type(raw).__name__}")
    try:
        return _ROUTES.validate_python(raw)
    except ValidationError as error:
        raise invalid_argument(str(error)) from None


def _merged(
    current: Mapping[str, RouteConfig], updates: Mapping[str, RouteConfig], remove: Collection[str]
) -> dict[str, RouteConfig]:
    unknown = sorted(set(remove) - current.keys())
    if unknown:
        raise invalid_argument(f"cannot remove routes {unknown}: no such routes; routes: {sorted(current)}")
    both = sorted(set(remove) & updates.keys())
    if both:
        raise invalid_argument(f"routes {both} are both set and removed")
    new = {name: route for name, route in current.items() if name not in remove}
    new.update(updates)
    return new
