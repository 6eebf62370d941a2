"""A feature view materialised by real Feast into a real Redis, served by Quasar in a ranked feed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from gateway.app import FeedApp
from kvstore.embedded import current_version
from kvstore.feast_store import FeastStoreConfig
from kvstore.loader import read_table_file
from quasar.cli import main
from remix.request import FeedRequest
from tests.integration.conftest import make_settings
from tests.integration.redis.servers import RedisServer

FEAST_VIEW = "member_stats"
MEMBERS = (3, 42, 77, 500, 10_000)  # 10,000: no row anywhere (a cold start, declared defaults)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("feast-ranking-redis"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def feast_repo(small_world: Path, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world's member profile rows as a Feast feature view, applied and materialised into Redis."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Int64

    directory = tmp_path_factory.mktemp("feast-member-repo")
    version = current_version(small_world / "store", "member_features")
    ids, rows = read_table_file(small_world / "store" / "member_features" / "versions" / str(version))
    names = ["activity", "log_connections", "log_followed_hashtags", "tenure_years"]
    now = datetime.now(UTC)
    frame = pd.DataFrame({"member_id": ids, **{n: rows[:, i].astype(np.float32) for i, n in enumerate(names)}})
    frame["event_timestamp"] = now - timedelta(minutes=5)
    frame.to_parquet(directory / "members.parquet")
    (directory / "feature_store.yaml").write_text(
        f"project: quasar_members\nprovider: local\nregistry: {directory / 'registry.db'}\n"
        f'online_store:\n  type: redis\n  connection_string: "127.0.0.1:{redis.port}"\n'
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    member = Entity(name="member", join_keys=["member_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name=FEAST_VIEW,
        entities=[member],
        ttl=timedelta(days=1),
        schema=[Field(name="member_id", dtype=Int64), *(Field(name=n, dtype=Float32) for n in names)],
        source=FileSource(name="members", path=str(directory / "members.parquet"), timestamp_field="event_timestamp"),
        tags={"team": "growth"},
    )
    store = FeatureStore(repo_path=str(directory))
    store.apply([member, view])
    store.materialize(now - timedelta(days=1), now + timedelta(seconds=1))
    return directory


def _world_with_profile_from_feast(small_world: Path, tmp_path: Path) -> Path:
    world = tmp_path / "world"
    world.mkdir()
    for entry in small_world.iterdir():
        if entry.name != "features":
            (world / entry.name).symlink_to(entry)
    shutil.copytree(small_world / "features", world / "features")
    path = world / "features" / "feed.yaml"
    document = yaml.safe_load(path.read_text())
    (profile,) = [v for v in document["views"] if v["name"] == "member_profile"]
    profile.update(store="feast", table=FEAST_VIEW)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return world


async def test_a_feast_view_ranks_exactly_like_the_same_rows_in_quasars_store(
    small_world: Path, feast_repo: Path, tmp_path: Path
) -> None:
    plain = FeedApp(make_settings(small_world))
    feast = FeedApp(
        make_settings(
            _world_with_profile_from_feast(small_world, tmp_path),
            stores={"feast": FeastStoreConfig(repo_path=feast_repo)},
        )
    )
    await plain.start()
    await feast.start()
    try:
        for member in MEMBERS:
            expected = await plain.get_feed(FeedRequest(f"p{member}", member, 30), timeout_s=5.0)
            served = await feast.get_feed(FeedRequest(f"f{member}", member, 30), timeout_s=5.0)
            assert not served.context.degraded, served.context.failures
            assert served.context.table_versions[FEAST_VIEW].startswith("quasar_members-")
            np.testing.assert_array_equal(served.feed.item_id, expected.feed.item_id)
            # ages are computed against the wall clock at each request: scores agree to its drift, not bit for bit
            np.testing.assert_allclose(served.feed.utility, expected.feed.utility, rtol=1e-4)  # type: ignore[arg-type]
    finally:
        await feast.close()
        await plain.close()


def test_import_feast_declares_the_repositorys_views(feast_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "features" / "feast.yaml"
    result = CliRunner().invoke(main, ["features", "import-feast", "--repo", str(feast_repo), "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(out.read_text())
    (view,) = document["views"]
    assert (view["name"], view["table"], view["store"], view["entity"]) == (FEAST_VIEW, FEAST_VIEW, "feast", "member")
    assert [f["name"] for f in view["features"]] == [
        "activity",
        "log_connections",
        "log_followed_hashtags",
        "tenure_years",
    ]
    assert view["max_age_s"] == 86400
