"""Which releases serve, as a value: per logical model (a release line), the stable release, a canary and
its share, and the history rollback walks back. Pure and JSON-able, so the supervisor of `--workers N`
computes a change once and hands the same plans to every worker, and a restarted gateway reads them back
from its state directory. Lines are independent: the feed's ranker and the jobs ranker release apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "stable": self.stable,
            "canary": self.canary,
            "canary_share": self.canary_share,
            "history": list(self.history),
        }

    @classmethod
    def from_dict(cls, raw: Any) -> ReleasePlan:
        if not isinstance(raw, dict):
            raise ValueError("a release plan is a JSON object")
        return cls(
            stable=raw.get("stable"),
            canary=raw.get("canary"),
            canary_share=float(raw.get("canary_share", 0.0)),
            history=tuple(raw.get("history", ())),
        )


@dataclass(frozen=True)
class ReleasePlans:
    """One `ReleasePlan` per logical model with releases (`lines`); models without one serve the
    deployment's own routes and table versions."""

    lines: Mapping[str, ReleasePlan] = field(default_factory=dict)

    @property
    def manifests(self) -> tuple[str, ...]:
        return tuple(m for model in sorted(self.lines) for m in self.lines[model].manifests)

    def line(self, model: str) -> ReleasePlan:
        return self.lines.get(model, ReleasePlan())

    def applied(self, model: str, manifest: str, *, canary_share: float = 0.0) -> ReleasePlans:
        return self._with(model, self.line(model).applied(manifest, canary_share=canary_share))

    def rolled_back(self, model: str | None) -> tuple[str, ReleasePlans]:
        """(the model rolled back, the plans after): `model` may be None when one line exists."""
        if model is None:
            if len(self.lines) != 1:
                known = ", ".join(sorted(self.lines)) or "none"
                raise PlanError(f"name the model to roll back (release lines: {known})")
            (model,) = self.lines
        if model not in self.lines:
            raise PlanError(f"no release of model {model!r} was applied (release lines: {sorted(self.lines)})")
        return model, self._with(model, self.lines[model].rolled_back())

    def _with(self, model: str, plan: ReleasePlan) -> ReleasePlans:
        lines = dict(self.lines)
        if plan.stable is None and not plan.history:
            lines.pop(model, None)
        else:
            lines[model] = plan
        return ReleasePlans(lines)

    def to_json(self) -> str:
        return json.dumps(
            {"lines": {model: plan.to_dict() for model, plan in sorted(self.lines.items())}},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ReleasePlans:
        raw: Any = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("lines", {}), dict):
            raise ValueError("release plans are a JSON object with `lines`")
        return cls({str(m): ReleasePlan.from_dict(p) for m, p in raw.get("lines", {}).items()})


def read_plans(state_dir: Path | None) -> ReleasePlans:
    """The plans saved in `state_dir` (none when there are none)."""
    if state_dir is None:
        return ReleasePlans()
    path = state_dir / STATE_FILE
    try:
        return ReleasePlans.from_json(path.read_text())
    except FileNotFoundError:
        return ReleasePlans()
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not release plans: {error}") from None


def save_plans(state_dir: Path | None, plans: ReleasePlans) -> None:
    """Write the plans atomically (a temp file renamed over the old one)."""
    if state_dir is None:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    staging = state_dir / f".{STATE_FILE}.{os.getpid()}"
    staging.write_text(plans.to_json())
    os.replace(staging, state_dir / STATE_FILE)
