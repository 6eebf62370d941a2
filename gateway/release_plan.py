"""Which releases serve, as a value: the stable one, a canary and its share, and the history rollback
walks back. Pure and JSON-able, so the supervisor of `--workers N` computes a change once and hands the
same plan to every worker, and a restarted gateway reads it back from its state directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

STATE_FILE = "releases.json"
HISTORY_KEPT = 10


class PlanError(ValueError):
    """A change that cannot apply to the plan in force (nothing to roll back, a share out of range)."""


@dataclass(frozen=True)
class ReleasePlan:
    """Manifest paths (absolute). `canary_share` in (0, 1] when `canary` is set, else 0."""

    stable: str | None = None
    canary: str | None = None
    canary_share: float = 0.0
    history: tuple[str, ...] = field(default_factory=tuple)

    @property
    def manifests(self) -> tuple[str, ...]:
        return tuple(p for p in (self.stable, self.canary) if p is not None)

    def applied(self, manifest: str, *, canary_share: float = 0.0) -> ReleasePlan:
        """The plan after applying `manifest`: as the stable release (the old one goes to history, a
        canary is dropped), or as a canary for `canary_share` of members beside the stable one."""
        if not 0.0 <= canary_share <= 1.0:
            raise PlanError(f"a canary share is a fraction in (0, 1], got {canary_share}")
        if canary_share > 0.0:
            if self.stable is None:
                raise PlanError("a canary needs a stable release beside it: apply one without --canary first")
            if manifest == self.stable:
                raise PlanError("the canary is the stable release already")
            return replace(self, canary=manifest, canary_share=canary_share)
        history = self.history if self.stable is None or self.stable == manifest else (*self.history, self.stable)
        return ReleasePlan(stable=manifest, history=history[-HISTORY_KEPT:])

    def rolled_back(self) -> ReleasePlan:
        """The canary dropped when there is one, else the previous stable release restored."""
        if self.canary is not None:
            return replace(self, canary=None, canary_share=0.0)
        if not self.history:
            raise PlanError("nothing to roll back to: no earlier release was applied")
        return ReleasePlan(stable=self.history[-1], history=self.history[:-1])

    def to_json(self) -> str:
        return json.dumps(
            {
                "stable": self.stable,
                "canary": self.canary,
                "canary_share": self.canary_share,
                "history": list(self.history),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ReleasePlan:
        raw: Any = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("a release plan is a JSON object")
        return cls(
            stable=raw.get("stable"),
            canary=raw.get("canary"),
            canary_share=float(raw.get("canary_share", 0.0)),
            history=tuple(raw.get("history", ())),
        )


def read_plan(state_dir: Path | None) -> ReleasePlan:
    """The plan saved in `state_dir` (an empty plan when there is none)."""
    if state_dir is None:
        return ReleasePlan()
    path = state_dir / STATE_FILE
    try:
        return ReleasePlan.from_json(path.read_text())
    except FileNotFoundError:
        return ReleasePlan()
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a release plan: {error}") from None


def save_plan(state_dir: Path | None, plan: ReleasePlan) -> None:
    """Write the plan atomically (a temp file renamed over the old one)."""
    if state_dir is None:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    staging = state_dir / f".{STATE_FILE}.{os.getpid()}"
    staging.write_text(plan.to_json())
    os.replace(staging, state_dir / STATE_FILE)
