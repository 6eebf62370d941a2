"""A real Feast repository for the interop tests and `benchmarks/feast_read.py`: parquet files as the
offline store (FileSource), a real Redis as the online store, applied and materialized through Feast's
Python API. Feast is imported here only, so the tests that need it fail with its ImportError, not ours.

Views (entities `driver` and `member`, int64 join keys):

    driver_stats    conv_rate f32, acc_rate f64, trips i64, embedding f32[8]     ttl 1 day, tags, owner
    driver_flags    active bool, rank i32, history i64[3] (length from a tag)  no ttl: an int64 row
    member_profile  score f32, likes bool[2], weights f64[4]                   ttl 2 hours
    driver_names    name string                                                 not servable by Quasar

Values are drawn from a seeded generator; event times are within the last hour, with microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROJECT = "quasar_feast"
SERVABLE = ("driver_flags", "driver_stats", "member_profile")
VIEW_ENTITY = {"driver_stats": "driver", "driver_flags": "driver", "member_profile": "member"}
JOIN_KEY = {"driver": "driver_id", "member": "member_id"}


@dataclass
class FeastRepo:
    """A materialized repository: its path, Feast's own `FeatureStore` on it, and the ids written."""

    path: Path
    project: str
    store: Any  # feast.FeatureStore
    ids: dict[str, np.ndarray]  # entity -> int64 ids materialized
    now: datetime

    def features(self, view: str) -> list[str]:
        return [f.name for f in self.store.get_feature_view(view).features]

    def online(self, view: str, ids: np.ndarray) -> dict[str, list[Any]]:
        """Feast's own `get_online_features` for every feature of `view`: feature -> values (None: missing)."""
        key = JOIN_KEY[VIEW_ENTITY[view]]
        refs = [f"{view}:{name}" for name in self.features(view)]
        rows = [{key: int(i)} for i in ids]
        return dict(self.store.get_online_features(features=refs, entity_rows=rows).to_dict())


def make_repo(directory: Path, redis_port: int, *, drivers: int = 64, members: int = 32, seed: int = 7) -> FeastRepo:
    """Write, apply and materialize the repository under `directory` into redis on `redis_port`."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "feature_store.yaml").write_text(
        f"project: {PROJECT}\n"
        "provider: local\n"
        f"registry: {directory / 'registry.db'}\n"
        "online_store:\n"
        "  type: redis\n"
        f'  connection_string: "127.0.0.1:{redis_port}"\n'
        "offline_store:\n"
        "  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    # Edge ids: negative, zero, beyond 2**32 and near 2**63, then a dense run.
    edge = np.array([-(2**62), -5, 0, 2**40, 2**63 - 1], dtype=np.int64)
    driver_ids = np.concatenate([edge, 1000 + np.arange(max(drivers - len(edge), 0), dtype=np.int64)])
    member_ids = 10**9 + np.arange(members, dtype=np.int64)

    def times(n: int) -> list[datetime]:
        return [now - timedelta(microseconds=int(us)) for us in rng.integers(1, 3_600_000_000, n)]

    n, m = len(driver_ids), len(member_ids)
    frames = {
        "driver_stats": pd.DataFrame(
            {
                "driver_id": driver_ids,
                "conv_rate": rng.random(n).astype(np.float32),
                "acc_rate": rng.random(n),
                "trips": rng.integers(-(2**40), 2**40, n),
                "embedding": list(rng.standard_normal((n, 8)).astype(np.float32)),
                "event_timestamp": times(n),
            }
        ),
        "driver_flags": pd.DataFrame(
            {
                "driver_id": driver_ids,
                "active": rng.random(n) < 0.5,
                "rank": rng.integers(-1000, 1000, n).astype(np.int32),
                "history": list(rng.integers(0, 2**50, (n, 3))),
                "event_timestamp": times(n),
            }
        ),
        "member_profile": pd.DataFrame(
            {
                "member_id": member_ids,
                "score": rng.standard_normal(m).astype(np.float32),
                "likes": list(rng.random((m, 2)) < 0.5),
                "weights": list(rng.standard_normal((m, 4))),
                "event_timestamp": times(m),
            }
        ),
        "driver_names": pd.DataFrame(
            {"driver_id": driver_ids, "name": [f"d{i}" for i in driver_ids], "event_timestamp": times(n)}
        ),
    }
    sources = {}
    for name, frame in frames.items():
        path = directory / f"{name}.parquet"
        frame.to_parquet(path)
        sources[name] = FileSource(name=f"{name}_source", path=str(path), timestamp_field="event_timestamp")

    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64, description="a driver")
    member = Entity(name="member", join_keys=["member_id"], value_type=ValueType.INT64, description="a member")
    views = [
        FeatureView(
            name="driver_stats",
            entities=[driver],
            ttl=timedelta(days=1),
            schema=[
                Field(name="driver_id", dtype=Int64),
                Field(name="conv_rate", dtype=Float32, description="conversion rate"),
                Field(name="acc_rate", dtype=Float64),
                Field(name="trips", dtype=Int64),
                Field(name="embedding", dtype=Array(Float32), vector_length=8),
            ],
            source=sources["driver_stats"],
            tags={"team": "ranking", "pii": ""},
            owner="ranking@example.com",
            description="driver statistics",
        ),
        FeatureView(
            name="driver_flags",
            entities=[driver],
            ttl=timedelta(0),
            schema=[
                Field(name="driver_id", dtype=Int64),
                Field(name="active", dtype=Bool),
                Field(name="rank", dtype=Int32),
                Field(name="history", dtype=Array(Int64), tags={"length": "3"}),
            ],
            source=sources["driver_flags"],
        ),
        FeatureView(
            name="member_profile",
            entities=[member],
            ttl=timedelta(hours=2),
            schema=[
                Field(name="member_id", dtype=Int64),
                Field(name="score", dtype=Float32),
                Field(name="likes", dtype=Array(Bool), vector_length=2),
                Field(name="weights", dtype=Array(Float64), vector_length=4),
            ],
            source=sources["member_profile"],
        ),
        FeatureView(
            name="driver_names",
            entities=[driver],
            ttl=timedelta(days=1),
            schema=[Field(name="driver_id", dtype=Int64), Field(name="name", dtype=String)],
            source=sources["driver_names"],
        ),
    ]
    store = FeatureStore(repo_path=str(directory))
    store.apply([driver, member, *views])
    store.materialize(now - timedelta(days=1), now + timedelta(seconds=1))
    return FeastRepo(directory, PROJECT, store, {"driver": driver_ids, "member": member_ids}, now)
