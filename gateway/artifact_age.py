"""How old the tables and indexes in force are, from their build time, against a maximum age.

A table version or an ANN index that stopped being rebuilt still serves: nothing fails, answers just go
stale. Ages are gauges (`quasar_table_age_seconds{table}`, `quasar_index_age_seconds{index}`) and an
artifact over its maximum is `quasar_artifact_stale{kind, name} 1` and makes `quasar health` report the
deployment unhealthy (never a failed request). "In force" means the version the stable release pins, else
the store's current one; indexes count when they were built from a table version in force.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Gauge

from kvstore.base import EmbeddingStore
from kvstore.errors import StoreError

log = logging.getLogger(__name__)

AGES_FILE = "artifacts.json"


@dataclass(frozen=True)
class ArtifactAge:
    kind: str  # table | index
    name: str
    version: str
    age_s: float
    max_age_s: float | None

    @property
    def stale(self) -> bool:
        return self.max_age_s is not None and self.age_s > self.max_age_s


def _epoch_s(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


class ArtifactAges:
    """`refresh()` reads build times (store metadata, index `meta.json`) and sets the gauges; `tables`:
    table -> store name (the declared views'); `pins()` the stable release's table pins."""

    def __init__(
        self,
        *,
        stores: Mapping[str, EmbeddingStore],
        tables: Mapping[str, str],
        index_root: Path | None,
        pins: Callable[[], Mapping[str, str]],
        max_table_age_s: float | None,
        max_index_age_s: float | None,
        registry: CollectorRegistry,
        wall_clock: Callable[[], float],
        state_dir: Path | None = None,
    ) -> None:
        self._stores = stores
        self._tables = dict(tables)
        self._index_root = index_root
        self._pins = pins
        self._max_table_age_s = max_table_age_s
        self._max_index_age_s = max_index_age_s
        self._clock = wall_clock
        self._state_dir = state_dir
        mode: dict[str, Literal["mostrecent"]] = {"multiprocess_mode": "mostrecent"}  # every worker: same value
        self._table_age = Gauge(
            "quasar_table_age_seconds", "Age of the table version in force.", ("table",), registry=registry, **mode
        )
        self._index_age = Gauge(
            "quasar_index_age_seconds", "Age of the ANN index in force.", ("index",), registry=registry, **mode
        )
        self._stale = Gauge(
            "quasar_artifact_stale",
            "1 when a table or index in force is older than its maximum age.",
            ("kind", "name"),
            registry=registry,
            **mode,
        )
        self.last: list[ArtifactAge] = []

    async def refresh(self) -> list[ArtifactAge]:
        now = self._clock()
        pins = self._pins()
        ages: list[ArtifactAge] = []
        by_store: dict[str, list[str]] = {}
        for table, store in self._tables.items():
            by_store.setdefault(store, []).append(table)
        versions: dict[str, str] = {}
        for store, tables in by_store.items():
            try:
                versions.update(await self._stores[store].current_versions(tables))
            except StoreError as error:
                log.warning("table ages not refreshed: %s", error)
            for table in tables:
                version = pins.get(table) or versions.get(table)
                if version is None:
                    continue
                versions[table] = version
                try:
                    info = await self._stores[store].info(table, version)
                except StoreError:
                    continue
                built = _epoch_s(info.created_at)
                if built is not None:
                    ages.append(ArtifactAge("table", table, version, max(0.0, now - built), self._max_table_age_s))
        ages += self._index_ages(versions, now)
        for age in ages:
            gauge = self._table_age if age.kind == "table" else self._index_age
            gauge.labels(age.name).set(age.age_s)
            self._stale.labels(age.kind, age.name).set(1.0 if age.stale else 0.0)
        self.last = ages
        self._save(ages)
        return ages

    def _index_ages(self, versions: Mapping[str, str], now: float) -> list[ArtifactAge]:
        if self._index_root is None or not self._index_root.is_dir():
            return []
        ages = []
        for meta_path in sorted(self._index_root.glob("*/*/meta.json")):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            table, version = str(meta.get("table", "")), str(meta.get("table_version", ""))
            built = _epoch_s(meta.get("created_at"))
            if built is None or versions.get(table) != version:
                continue  # built from a version not in force: not what serves
            name = meta_path.parent.parent.name
            ages.append(ArtifactAge("index", name, version, max(0.0, now - built), self._max_index_age_s))
        return ages

    def _save(self, ages: list[ArtifactAge]) -> None:
        """For `quasar health check`, which reads the state directory rather than a gateway."""
        if self._state_dir is None:
            return
        directory = self._state_dir / "health"
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".{AGES_FILE}.{os.getpid()}"
        rows = [{**asdict(a), "stale": a.stale} for a in ages]
        staging.write_text(json.dumps({"time_s": self._clock(), "artifacts": rows}))
        os.replace(staging, directory / AGES_FILE)
