"""Table versions pinned by the model's manifest, and what serving does about any other version.

A ranker is trained against one version of each embedding table; its manifest (the world's `world.json`,
`tables`: table -> {"version": ...}) records them. Vectors of another version live in another space:
scores computed from them are wrong, silently. `PinnedStore` checks every lookup's version against the
pins: `refuse` raises `VersionMismatch` (a dependency failure: the step fails and its fallback serves,
the answer is degraded), `alert` counts `quasar_kvstore_version_mismatch_total{table}` and logs once per
(table, version), then serves. Tables without a pin are not checked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict

from kvstore._decorator import StoreDecorator
from kvstore.base import EmbeddingStore, Lookup
from kvstore.errors import StoreError

log = logging.getLogger(__name__)


class VersionPolicy(BaseModel):
    """`mode`: what a lookup at a version other than the pinned one does (`off`: no check).
    `manifest`: the model manifest whose `tables` pin versions (the gateway defaults it to
    `<world_dir>/world.json`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["refuse", "alert", "off"] = "refuse"
    manifest: Path | None = None


class VersionMismatch(StoreError):
    """A lookup at a table version the model was not trained with (policy `refuse`)."""

    reason = "table version refused"


def read_pins(manifest: Path) -> dict[str, str]:
    """table -> version from a manifest's `tables` (values are {"version": ...} objects or strings).

    Raises FileNotFoundError, or ValueError for a manifest without a readable `tables` mapping.
    """
    raw = json.loads(Path(manifest).read_text())
    tables = raw.get("tables") if isinstance(raw, dict) else None
    if not isinstance(tables, dict):
        raise ValueError(f"{manifest}: no `tables` mapping")
    pins = {}
    for table, entry in tables.items():
        version = entry.get("version") if isinstance(entry, dict) else entry
        if not isinstance(version, str) or not version:
            raise ValueError(f"{manifest}: table {table!r} has no version")
        pins[str(table)] = version
    return pins


class PinnedStore(StoreDecorator):
    """`EmbeddingStore` decorator applying a `VersionPolicy`. Pins come from `pins`, or are read from
    `manifest` at `start()` (a missing manifest means no pins, logged)."""

    def __init__(
        self,
        inner: EmbeddingStore,
        *,
        mode: Literal["refuse", "alert", "off"],
        pins: Mapping[str, str] | None = None,
        manifest: Path | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(inner)
        self.mode = mode
        self.pins: dict[str, str] = dict(pins or {})
        self._released: dict[str, frozenset[str]] = {}
        self._manifest = manifest
        self._alerted: set[tuple[str, str]] = set()
        self._mismatches = Counter(
            "quasar_kvstore_version_mismatch_total",
            "Lookups at a table version other than the one the model's manifest pins.",
            ("table", "mode"),
            registry=registry if registry is not None else CollectorRegistry(),
        )

    async def start(self) -> None:
        if self._manifest is not None and self.mode != "off":
            try:
                self.pins = read_pins(self._manifest)
            except FileNotFoundError:
                log.warning("no model manifest at %s: table versions are not pinned", self._manifest)
        await super().start()

    def allow_released(self, pins: Mapping[str, frozenset[str]]) -> None:
        """Table -> the versions the releases in force pin (a canary and its stable release may pin two):
        reads at those versions pass the check too. Replaces what an earlier call allowed (one assignment)."""
        self._released = dict(pins)

    def check(self, table: str, version: str) -> None:
        """Apply the policy to a read of `table` at `version` (raises `VersionMismatch` when refused)."""
        pinned = self.pins.get(table)
        if pinned is None or pinned == version or self.mode == "off" or version in self._released.get(table, ()):
            return
        self._mismatches.labels(table, self.mode).inc()
        if self.mode == "refuse":
            raise VersionMismatch(
                f"version {version!r} is not the model's {pinned!r} (policy: refuse)", store=self.name, table=table
            )
        if (table, version) not in self._alerted:
            self._alerted.add((table, version))
            log.warning(
                "serving %s@%s, but the model was trained with %s@%s (policy: alert)", table, version, table, pinned
            )

    async def lookup(
        self, table: str, ids: npt.NDArray[np.int64], *, version: str, timeout_s: float | None = None
    ) -> Lookup:
        self.check(table, version)
        return await self.inner.lookup(table, ids, version=version, timeout_s=timeout_s)


if TYPE_CHECKING:
    _conforms: type[EmbeddingStore] = PinnedStore
