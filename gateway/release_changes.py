"""Switching releases: in this process, or in every worker of `quasar serve --workers N` at once.

`AdminService.ApplyRelease` / `RollbackRelease` hand the change to a `ReleaseChanges`. In one process
that is `LocalReleaseChanges` (one lock). With workers, `ClusterReleaseChanges` forwards it to the
supervisor, which computes the new plan once, prepares it on every worker (each loads and validates the
artifacts itself), then commits it on every worker, saves it, and only then answers: when ApplyRelease
returns, every worker serves the new plan.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.control import ControlChannel, ControlError, Message
from gateway.release_plan import PlanError, ReleasePlans, save_plans
from gateway.releases import ReleaseManager, ReleaseRejected, report_lines

# Each worker loads the artifacts and runs the validation sample and warm-up requests: seconds at most.
CLUSTER_RELEASE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ReleaseChange:
    """`model`: the release line the call changed; `plans`: those in force after it (a dry run: as before);
    `report`: the validation report's lines (`report_lines`)."""

    model: str
    plans: ReleasePlans
    report: list[str]

    def to_message(self) -> Message:
        return {"model": self.model, "plans": self.plans.to_json(), "report": self.report}

    @classmethod
    def from_message(cls, message: Message) -> ReleaseChange:
        return cls(
            str(message["model"]),
            ReleasePlans.from_json(str(message["plans"])),
            [str(line) for line in message.get("report", [])],
        )


class ReleaseChanges(Protocol):
    async def apply(self, manifest: str, *, canary_share: float, dry_run: bool) -> ReleaseChange:
        """Apply the release of `manifest` to its model's line. Raises `ReleaseRejected`."""
        ...

    async def rollback(self, model: str | None) -> ReleaseChange:
        """Roll back `model`'s line (None: the only line). Raises `ReleaseRejected`."""
        ...


class LocalReleaseChanges:
    """One process: changes are serialised and saved in the state directory."""

    def __init__(self, manager: ReleaseManager) -> None:
        self._manager = manager
        self._lock = asyncio.Lock()

    async def apply(self, manifest: str, *, canary_share: float, dry_run: bool) -> ReleaseChange:
        async with self._lock:
            model = self._manager.read(manifest).model
            try:
                plans = self._manager.plans.applied(model, manifest, canary_share=canary_share)
            except PlanError as error:
                raise ReleaseRejected(str(error)) from None
            reports = await self._manager.prepare(plans, validate=[manifest])
            if not dry_run:
                self._manager.commit(plans)
                save_plans(self._manager.state_dir, plans)
            return ReleaseChange(model, self._manager.plans, report_lines(reports))

    async def rollback(self, model: str | None) -> ReleaseChange:
        async with self._lock:
            try:
                model, plans = self._manager.plans.rolled_back(model)
            except PlanError as error:
                raise ReleaseRejected(str(error)) from None
            await self._manager.prepare(plans)
            self._manager.commit(plans)
            save_plans(self._manager.state_dir, plans)
            return ReleaseChange(model, plans, [])


class ClusterReleaseChanges:
    """A worker's side: the supervisor applies the change to every worker (this one included)."""

    def __init__(self, channel: ControlChannel) -> None:
        self._channel = channel

    async def apply(self, manifest: str, *, canary_share: float, dry_run: bool) -> ReleaseChange:
        return ReleaseChange.from_message(
            await self._ask(
                {
                    "op": "release",
                    "action": "apply",
                    "manifest": manifest,
                    "canary_share": canary_share,
                    "dry_run": dry_run,
                }
            )
        )

    async def rollback(self, model: str | None) -> ReleaseChange:
        return ReleaseChange.from_message(await self._ask({"op": "release", "action": "rollback", "model": model}))

    async def _ask(self, message: Message) -> Message:
        try:
            return await self._channel.request(message, timeout_s=CLUSTER_RELEASE_TIMEOUT_S)
        except ControlError as error:
            raise ReleaseRejected(error.message) from None


if TYPE_CHECKING:
    _local: type[ReleaseChanges] = LocalReleaseChanges
    _cluster: type[ReleaseChanges] = ClusterReleaseChanges
