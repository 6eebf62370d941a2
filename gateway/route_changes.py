"""Changing the route table: in this process, or in every worker of `quasar serve --workers N` at once.

`AdminService.SetRoutes` hands its parsed change to a `RouteChanges`. In one process that is
`LocalRouteChanges` (one lock, the router checks then swaps). With workers, a call reaches one worker;
`ClusterRouteChanges` forwards it to the supervisor, which applies it to every worker (checked on all
first, then swapped on all) and answers only after each one has acknowledged: when SetRoutes returns, no
worker serves the old table any more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from engines.config import RouteConfig
from engines.errors import EngineError
from gateway.control import ControlChannel, ControlError
from gateway.route_merge import merge_routes, parse_routes, routes_json, routes_version
from gateway.status import RequestRejected, aborted, failed_precondition, invalid_argument, unavailable

if TYPE_CHECKING:
    from engines import Router

# The supervisor checks and swaps on every worker; a worker loading its engines answers in seconds at most.
CLUSTER_CHANGE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RouteChange:
    before: dict[str, RouteConfig]
    after: dict[str, RouteConfig]

    @property
    def changed(self) -> list[str]:
        names = self.before.keys() | self.after.keys()
        return sorted(name for name in names if self.before.get(name) != self.after.get(name))


class RouteChanges(Protocol):
    async def apply(
        self,
        updates: Mapping[str, RouteConfig],
        remove: Collection[str],
        *,
        expected_version: str,
        dry_run: bool,
    ) -> RouteChange:
        """`updates` set and `remove` dropped, checked (dry run) or put in force. Raises `RequestRejected`:
        ABORTED when `expected_version` is set and is not the current table's, INVALID_ARGUMENT for a
        change that cannot apply, FAILED_PRECONDITION when a target cannot be resolved."""
        ...


def planned(
    current: Mapping[str, RouteConfig],
    updates: Mapping[str, RouteConfig],
    remove: Collection[str],
    expected_version: str,
) -> dict[str, RouteConfig]:
    """The table after the change, or ABORTED when the caller read another version than `current`."""
    if expected_version and expected_version != routes_version(current):
        raise aborted(
            f"routes are at version {routes_version(current)}, not {expected_version}: read them again and retry"
        )
    owned = sorted(name for name in (*updates, *remove) if is_release_route(name))
    if owned:
        raise invalid_argument(f"routes {owned} belong to releases: change them with `quasar deploy`")
    return merge_routes(current, updates, remove)


def is_release_route(name: str) -> bool:
    """Routes named `<model>@<release>` are installed by releases (gateway.releases), not by SetRoutes."""
    return "@" in name


def without_release_routes(routes: Mapping[str, RouteConfig]) -> dict[str, RouteConfig]:
    return {name: route for name, route in routes.items() if not is_release_route(name)}


async def put_in_force(router: Router, routes: Mapping[str, RouteConfig], *, dry_run: bool) -> None:
    """Check (dry run) or swap `routes` on `router`; its errors as INVALID_ARGUMENT / FAILED_PRECONDITION.
    The routes releases installed stay (`routes` is the table SetRoutes manages)."""
    routes = {**{n: r for n, r in router.routes.items() if is_release_route(n)}, **without_release_routes(routes)}
    try:
        if dry_run:
            await router.check_routes(routes)
        else:
            await router.swap_routes(routes)
    except ValueError as error:
        raise invalid_argument(str(error)) from None
    except EngineError as error:
        raise failed_precondition(str(error)) from None


class LocalRouteChanges:
    """One process: changes are serialised (one lock), so a read-merge-swap never loses a concurrent one."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._lock = asyncio.Lock()

    async def apply(
        self,
        updates: Mapping[str, RouteConfig],
        remove: Collection[str],
        *,
        expected_version: str,
        dry_run: bool,
    ) -> RouteChange:
        async with self._lock:
            current = without_release_routes(self._router.routes)
            new = planned(current, updates, remove, expected_version)
            await put_in_force(self._router, new, dry_run=dry_run)
        return RouteChange(current, new)


class ClusterRouteChanges:
    """A worker's side: the supervisor applies the change to every worker (this one included)."""

    def __init__(self, channel: ControlChannel) -> None:
        self._channel = channel

    async def apply(
        self,
        updates: Mapping[str, RouteConfig],
        remove: Collection[str],
        *,
        expected_version: str,
        dry_run: bool,
    ) -> RouteChange:
        try:
            answer = await self._channel.request(
                {
                    "op": "set_routes",
                    "routes": routes_json(updates),
                    "remove": sorted(remove),
                    "expected_version": expected_version,
                    "dry_run": dry_run,
                },
                timeout_s=CLUSTER_CHANGE_TIMEOUT_S,
            )
        except ControlError as error:
            raise as_status(error) from None
        return RouteChange(parse_routes(answer["before"]), parse_routes(answer["after"]))


def as_status(error: ControlError) -> RequestRejected:
    """A failed control answer as the status the admin caller gets."""
    make = {"aborted": aborted, "invalid_argument": invalid_argument, "failed_precondition": failed_precondition}
    return make.get(error.code, unavailable)(error.message)


def control_error(error: RequestRejected) -> ControlError:
    """A status raised while applying a change, as a control answer (its code's name in lower case)."""
    return ControlError(error.code.name.lower(), str(error))


if TYPE_CHECKING:
    _local: type[RouteChanges] = LocalRouteChanges
    _cluster: type[RouteChanges] = ClusterRouteChanges
