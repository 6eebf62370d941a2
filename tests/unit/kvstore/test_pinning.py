"""PinnedStore: lookups at a version other than the model's are refused or alerted; pins from a manifest."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from kvstore.fake import InMemoryStore
from kvstore.pinning import PinnedStore, VersionMismatch, VersionPolicy, read_pins
from remix.failures import Category, classify

IDS = np.array([1, 2], dtype=np.int64)


@pytest.fixture
def inner() -> InMemoryStore:
    store = InMemoryStore()
    store.put("item", IDS, np.ones((2, 3)), version="v1")
    store.put("item", IDS, np.zeros((2, 3)), version="v2")  # current
    store.put("free", IDS, np.ones((2, 3)), version="x")
    return store


def mismatches(registry: CollectorRegistry, mode: str) -> float:
    return registry.get_sample_value("quasar_kvstore_version_mismatch_total", {"table": "item", "mode": mode}) or 0.0


async def test_refuse_fails_lookups_at_other_versions(inner: InMemoryStore) -> None:
    registry = CollectorRegistry()
    store = PinnedStore(inner, mode="refuse", pins={"item": "v1"}, registry=registry)
    await store.start()
    assert (await store.lookup("item", IDS, version="v1")).found.all()
    with pytest.raises(VersionMismatch, match="'v2' is not the model's 'v1'") as raised:
        await store.lookup("item", IDS, version="v2")
    assert classify(raised.value) is Category.DEPENDENCY  # the step fails over to its fallback
    assert raised.value.table == "item"
    assert (await store.lookup("free", IDS, version="x")).found.all()  # not pinned: not checked
    assert mismatches(registry, "refuse") == 1


async def test_alert_serves_counts_and_logs_once(inner: InMemoryStore, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    store = PinnedStore(inner, mode="alert", pins={"item": "v1"}, registry=registry)
    await store.start()
    with caplog.at_level(logging.WARNING, logger="kvstore.pinning"):
        for _ in range(3):
            assert (await store.lookup("item", IDS, version="v2")).found.all()
    assert mismatches(registry, "alert") == 3
    assert [r.getMessage() for r in caplog.records] == [
        "serving item@v2, but the model was trained with item@v1 (policy: alert)"
    ]


async def test_pins_are_read_from_the_manifest_at_start(inner: InMemoryStore, tmp_path: Path) -> None:
    manifest = tmp_path / "world.json"
    manifest.write_text(json.dumps({"tables": {"item": {"version": "v1", "dim": 3}, "free": "x"}}))
    store = PinnedStore(inner, mode="refuse", manifest=manifest)
    assert store.pins == {}  # no I/O before start
    await store.start()
    assert store.pins == {"item": "v1", "free": "x"}
    with pytest.raises(VersionMismatch):
        await store.lookup("item", IDS, version="v2")


async def test_a_missing_manifest_pins_nothing(inner: InMemoryStore, tmp_path: Path) -> None:
    store = PinnedStore(inner, mode="refuse", manifest=tmp_path / "absent.json")
    await store.start()
    assert (await store.lookup("item", IDS, version="v2")).found.all()


def test_read_pins_rejects_a_manifest_without_tables(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(json.dumps({"tables": {"item": {}}}))
    with pytest.raises(ValueError, match="'item' has no version"):
        read_pins(tmp_path / "m.json")
    (tmp_path / "n.json").write_text("[]")
    with pytest.raises(ValueError, match="no `tables`"):
        read_pins(tmp_path / "n.json")


def test_the_default_policy_refuses() -> None:
    assert VersionPolicy().mode == "refuse"
