"""Switching releases: in this process, or in every worker of `quasar serve --workers N` at once.

`AdminService.ApplyRelease` / `RollbackRelease` hand the change to a `ReleaseChanges`. In one process
that is `LocalReleaseChanges` (one lock). With workers, `ClusterReleaseChanges` forwards it to the
supervisor, which computes the new plan once, prepares it on every worker (each loads and validates the
artifacts itself), then commits it on every worker, saves it, and only then answers: when ApplyRelease
returns, every worker serves the new plan.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from gateway.control import ControlChannel, ControlError, Message
from gateway.release_plan import PlanError, ReleasePlan, save_plan
from gateway.releases import ReleaseManager, ReleaseRejected, report_lines

# Each worker loads the artifacts and runs the validation sample and warm-up requests: seconds at most.
CLUSTER_RELEASE_TIMEOUT_S = 120.0


class ReleaseChanges(Protocol):
    async def apply(self, manifest: str, *, canary_share: float, dry_run: bool) -> tuple[ReleasePlan, list[str]]:
        """The plan in force after the call and the validation report's lines. Raises `ReleaseRejected`."""
        ...

    async def rollback(self) -> ReleasePlan: ...


class LocalReleaseChanges:
    """One process: changes are serialised and saved in the state directory."""

    def __init__(self, manager: ReleaseManager) -> None:
        self._manager = manager
        self._lock = asyncio.Lock()

    async def apply(self, manifest: str, *, canary_share: float, dry_run: bool) -> tuple[ReleasePlan, list[str]]:
        """The plan in force after the call, and the validation report's lines."""
        async with self._lock:
            try:
                plan = self._manager.plan.applied(manifest, canary_share=canary_share)
            except PlanError as error:
                raise ReleaseRejected(str(error)) from None
            reports = await self._manager.prepare(plan, validate=[manifest])
            if not dry_run:
                self._manager.commit(plan)
                save_plan(self._manager.state_dir, plan)
            return (self._manager.plan, report_lines(reports))

    async def rollback(self) -> ReleasePlan:
        async with self._lock:
            try:
                plan = self._manager.plan.rolled_back()
            except PlanError as error:
                raise ReleaseRejected(str(error)) from None
            await self._manager.prepare(plan)
            self._manager.commit(plan)
            save_plan(self._manager.state_dir, plan)
            return plan


class ClusterReleaseChanges:
    """A worker's side: the supervisor applies the change to every worker (this one included)."""

    def __init__(self, channel: ControlChannel) -> None:
        self._channel = channel

    async def apply(self, manifest: str, *, canary_share: float, dry_run: bool) -> tuple[ReleasePlan, list[str]]:
        answer = await self._ask(
            {"op": "release", "action": "apply", "manifest": manifest, "canary_share": canary_share, "dry_run": dry_run}
        )
        return ReleasePlan.from_json(str(answer["plan"])), [str(line) for line in answer.get("report", [])]

    async def rollback(self) -> ReleasePlan:
        answer = await self._ask({"op": "release", "action": "rollback"})
        return ReleasePlan.from_json(str(answer["plan"]))

    async def _ask(self, message: Message) -> Message:
        try:
            return await self._channel.request(message, timeout_s=CLUSTER_RELEASE_TIMEOUT_S)
        except ControlError as error:
            raise ReleaseRejected(error.message) from None


if TYPE_CHECKING:
    _local: type[ReleaseChanges] = LocalReleaseChanges
    _cluster: type[ReleaseChanges] = ClusterReleaseChanges
