"""build_store composes cache, lookup metrics and version policy around a store, from config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter, ValidationError

from kvstore.cache import CachedStore
from kvstore.config import EmbeddedStoreConfig, RedisStoreConfig, StoreConfig, build_store
from kvstore.embedded import EmbeddedStore, set_current, write_version
from kvstore.errors import TableNotFound
from kvstore.instrumented import InstrumentedStore
from kvstore.pinning import PinnedStore, VersionMismatch
from kvstore.redis import RedisStore

ADAPTER: TypeAdapter[EmbeddedStoreConfig | RedisStoreConfig] = TypeAdapter(StoreConfig)


def test_redis_config_parses_and_builds_without_io() -> None:
    config = ADAPTER.validate_python(
        {"kind": "redis", "url": "redis://10.0.0.1:7000/0", "pool_size": 4, "cache": {"tables": ["member"]}}
    )
    assert isinstance(config, RedisStoreConfig)
    store = config.build("kv")
    assert isinstance(store, RedisStore)
    assert store.name == "kv"
    assert not store.cluster
    with pytest.raises(ValidationError, match="expected a redis://host:port/db URL"):
        ADAPTER.validate_python({"kind": "redis", "url": "10.0.0.1:7000"})
    with pytest.raises(ValidationError, match="greater than 0"):
        ADAPTER.validate_python({"kind": "redis", "url": "redis://h", "timeout_s": 0})


def test_the_stack_is_pinned_outermost_then_metrics_then_cache(tmp_path: Path) -> None:
    config = EmbeddedStoreConfig(root=tmp_path, cache={"tables": ["member"]})  # type: ignore[arg-type]
    store = build_store(config, registry=CollectorRegistry(), manifest=tmp_path / "world.json")
    assert isinstance(store, PinnedStore)
    assert isinstance(store.inner, InstrumentedStore)
    assert isinstance(store.inner.inner, CachedStore)
    assert isinstance(store.inner.inner.inner, EmbeddedStore)
    plain = build_store(EmbeddedStoreConfig(root=tmp_path, version_policy={"mode": "off"}))  # type: ignore[arg-type]
    assert isinstance(plain, InstrumentedStore)
    assert isinstance(plain.inner, EmbeddedStore)


async def test_lookup_metrics_and_pins_from_the_manifest(tmp_path: Path) -> None:
    for version, sign in (("v1", 1.0), ("v2", -1.0)):
        write_version(tmp_path, "item", np.array([1, 2]), sign * np.ones((2, 3)), version=version)
    set_current(tmp_path, "item", "v2")
    (tmp_path / "world.json").write_text(json.dumps({"tables": {"item": {"version": "v1"}}}))
    registry = CollectorRegistry()
    store = build_store(EmbeddedStoreConfig(root=tmp_path), registry=registry, manifest=tmp_path / "world.json")
    await store.start()
    assert (await store.lookup("item", np.array([1, 5]), version="v1")).missing == 1
    with pytest.raises(VersionMismatch):
        await store.lookup("item", np.array([1]), version="v2")
    with pytest.raises(TableNotFound):
        await store.lookup("nope", np.array([1]), version="v1")

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert sample("quasar_kvstore_lookup_seconds_count", store="embedded", table="item") == 1
    assert sample("quasar_kvstore_missing_ids_total", table="item") == 1
    assert sample("quasar_kvstore_lookup_errors_total", store="embedded", table="nope", error="TableNotFound") == 1
    assert sample("quasar_kvstore_version_mismatch_total", table="item", mode="refuse") == 1
