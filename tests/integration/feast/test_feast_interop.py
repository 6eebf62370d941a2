"""Feast interop: a real Feast repository (parquet offline store, Redis online store on a redis-server of
this module), applied and materialized through Feast's Python API, read back by Quasar's own client.

The oracle is Feast itself: `FeastRedisStore.lookup` must return exactly what Feast's
`get_online_features` returns for the same ids, keys must be Feast's serialized entity keys, and the
declarations must describe the views Feast holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from kvstore._feast_layout import field_name, redis_keys, timestamp_field
from kvstore._feast_value import _varint
from kvstore.base import EmbeddingStore
from kvstore.errors import CorruptValue, StoreUnavailable, TableNotFound
from kvstore.feast_registry import (
    FeastRepo,
    UnsupportedFeastView,
    declarations,
    load_feast_repo,
    redis_url,
    views_from_feast,
)
from kvstore.feast_store import FeastRedisStore, FeastStoreConfig
from tests.integration.feast.repo import PROJECT, SERVABLE, VIEW_ENTITY, make_repo
from tests.integration.feast.repo import FeastRepo as MaterializedRepo
from tests.integration.redis.servers import RedisServer, free_port

MISSING_IDS = np.array([123_456_789, -1, 2**63 - 2], dtype=np.int64)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("feast-redis"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def feast_repo(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> MaterializedRepo:
    return make_repo(tmp_path_factory.mktemp("feast-repo"), redis.port)


@pytest.fixture(scope="module")
def definitions(feast_repo: MaterializedRepo) -> FeastRepo:
    return load_feast_repo(feast_repo.path)


@pytest.fixture
async def open_store(definitions: FeastRepo) -> AsyncIterator[Callable[..., Any]]:
    """Starts stores over the module's repository (options as keywords); closes them after the test."""
    started: list[FeastRedisStore] = []

    async def start(**options: Any) -> FeastRedisStore:
        store = FeastRedisStore(lambda: definitions, **options)
        await store.start()
        started.append(store)
        return store

    yield start
    for store in started:
        await store.close()


def query_ids(feast_repo: MaterializedRepo, view: str) -> np.ndarray:
    """Every id written for the view's entity, in a shuffled order, with missing ids and a repeat mixed in."""
    written = feast_repo.ids[VIEW_ENTITY[view]]
    ids = np.concatenate([written, MISSING_IDS, written[:3]])
    return np.random.default_rng(1).permutation(ids)


def feast_rows(feast_repo: MaterializedRepo, view: str, ids: np.ndarray) -> tuple[list[list[float]], list[bool]]:
    """Feast's answer as rows: features concatenated in schema order; found where no feature is None."""
    online = feast_repo.online(view, ids)
    names = feast_repo.features(view)
    rows: list[list[float] | None] = []
    for i in range(len(ids)):
        values = [online[name][i] for name in names]
        if any(value is None for value in values):
            rows.append(None)
        else:
            rows.append([x for value in values for x in (value if isinstance(value, list) else [value])])
    width = len(next(row for row in rows if row is not None))
    return [row or [0] * width for row in rows], [row is not None for row in rows]


# -- keys and fields --------------------------------------------------------------------------------------


def test_entity_keys_are_feasts_serialized_keys(feast_repo: MaterializedRepo, redis: RedisServer) -> None:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    ids = np.array([-(2**63), -(2**62), -5, -1, 0, 1, 255, 256, 2**31, 2**40, 2**63 - 1], dtype=np.int64)
    for version in (2, 3):
        with warnings.catch_warnings():  # Feast warns that version 2 is deprecated; it still writes it
            warnings.simplefilter("ignore", UserWarning)
            expected = [
                serialize_entity_key(
                    EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=int(i))]),
                    entity_key_serialization_version=version,
                )
                + PROJECT.encode()
                for i in ids
            ]
        assert redis_keys(ids, "driver_id", PROJECT, version) == expected

    # The hashes Feast's materialization wrote are exactly the keys of the ids it was given.
    written = set(redis.command("KEYS", "*"))
    ours = {*redis_keys(feast_repo.ids["driver"], "driver_id", PROJECT)}
    ours |= {*redis_keys(feast_repo.ids["member"], "member_id", PROJECT)}
    assert written == ours


def test_field_names_are_feasts(feast_repo: MaterializedRepo, redis: RedisServer) -> None:
    from feast.infra.online_stores.helpers import _mmh3

    for view in SERVABLE:
        for feature in feast_repo.features(view):
            assert field_name(view, feature) == _mmh3(f"{view}:{feature}")
    (key,) = redis_keys(feast_repo.ids["member"][:1], "member_id", PROJECT)
    fields = set(redis.command("HKEYS", key))
    expected = {field_name("member_profile", f) for f in feast_repo.features("member_profile")}
    assert fields == expected | {timestamp_field("member_profile")}


# -- lookups against Feast's own reads ---------------------------------------------------------------------


@pytest.mark.parametrize("view", SERVABLE)
async def test_lookup_returns_what_feast_returns(
    feast_repo: MaterializedRepo, open_store: Callable[..., Any], view: str
) -> None:
    store = await open_store()
    ids = query_ids(feast_repo, view)
    version = (await store.current_versions([view]))[view]
    lookup = await store.lookup(view, ids, version=version)
    rows, found = feast_rows(feast_repo, view, ids)

    info = await store.info(view)
    assert lookup.vectors.shape == (len(ids), info.dim)
    assert lookup.vectors.dtype == (np.int64 if info.dtype == "int64" else np.float32)
    assert lookup.found.tolist() == found
    assert lookup.missing == len(MISSING_IDS)
    expected = np.array(rows, dtype=lookup.vectors.dtype)  # float64 features narrow like numpy narrows
    np.testing.assert_array_equal(lookup.vectors, expected)
    assert lookup.version == version


async def test_a_null_or_absent_feature_value_makes_the_row_missing(
    feast_repo: MaterializedRepo, redis: RedisServer, open_store: Callable[..., Any]
) -> None:
    # Feast stores a null as an empty Value; a hash without one feature's field is an older schema's row.
    nulled, stripped, intact = (int(i) for i in feast_repo.ids["driver"][-3:])
    (nulled_key, stripped_key) = redis_keys([nulled, stripped], "driver_id", PROJECT)
    trips, embedding = field_name("driver_stats", "trips"), field_name("driver_stats", "embedding")
    saved = redis.command("HGET", nulled_key, trips), redis.command("HGET", stripped_key, embedding)
    redis.command("HSET", nulled_key, trips, b"")
    redis.command("HDEL", stripped_key, embedding)
    try:
        store = await open_store()
        ids = np.array([nulled, stripped, intact], dtype=np.int64)
        version = versions_of(await store.current_versions(["driver_stats"]))
        lookup = await store.lookup("driver_stats", ids, version=version)
        assert lookup.found.tolist() == [False, False, True]
        assert not lookup.vectors[:2].any()
        online = feast_repo.online("driver_stats", ids)
        assert online["trips"][0] is None  # Feast agrees both are absent
        assert online["embedding"][1] is None
    finally:  # the module's other tests read these rows as Feast wrote them
        redis.command("HSET", nulled_key, trips, saved[0])
        redis.command("HSET", stripped_key, embedding, saved[1])


@contextlib.contextmanager
def overwritten(redis: RedisServer, changes: dict[bytes, dict[bytes, bytes]]) -> Iterator[None]:
    """Hash fields set ({key: {field: value}}) for the block, then restored as Feast wrote them (the
    module's other tests read these rows)."""
    saved = {key: {field: redis.command("HGET", key, field) for field in fields} for key, fields in changes.items()}
    for key, fields in changes.items():
        for field, value in fields.items():
            redis.command("HSET", key, field, value)
    try:
        yield
    finally:
        for key, fields in saved.items():
            for field, value in fields.items():
                redis.command("HSET", key, field, value)


async def test_values_in_other_valid_encodings_decode_exactly(
    feast_repo: MaterializedRepo, redis: RedisServer, open_store: Callable[..., Any]
) -> None:
    # Unpacked repeated fields are valid protobuf (parsers must accept them) but not the packed layout the
    # vectorised paths expect, and an explicit null_val is a null: both take the exact path.
    def unpacked(list_field: int, element_tag: bytes, elements: list[bytes]) -> bytes:
        inner = b"".join(element_tag + e for e in elements)
        return _varint(list_field << 3 | 2) + _varint(len(inner)) + inner

    driver, other, nulled = (int(i) for i in feast_repo.ids["driver"][10:13])
    keys = redis_keys([driver, other, nulled], "driver_id", PROJECT)
    embedding = np.arange(8, dtype=np.float32) - 3.5
    history = [7, 2**40, 0]
    changes = {
        keys[0]: {
            field_name("driver_stats", "embedding"): unpacked(16, b"\x0d", [struct.pack("<f", x) for x in embedding]),
        },
        keys[1]: {field_name("driver_flags", "history"): unpacked(14, b"\x08", [_varint(v) for v in history])},
        keys[2]: {field_name("driver_flags", "rank"): b"\x98\x01\x00"},  # Value(null_val=NULL)
    }
    with overwritten(redis, changes):
        store = await open_store()
        versions = await store.current_versions(["driver_stats", "driver_flags"])
        stats = await store.lookup("driver_stats", np.array([driver]), version=versions["driver_stats"])
        flags = await store.lookup("driver_flags", np.array([other, nulled]), version=versions["driver_flags"])
        assert stats.found.tolist() == [True]
        np.testing.assert_array_equal(stats.vectors[0, 3:], embedding)
        assert flags.found.tolist() == [True, False]
        assert flags.vectors[0, 2:].tolist() == history
        assert feast_repo.online("driver_flags", np.array([other]))["history"] == [history]  # Feast agrees


async def test_a_value_of_another_type_is_a_corrupt_value_naming_feature_and_entity(
    feast_repo: MaterializedRepo, redis: RedisServer, open_store: Callable[..., Any]
) -> None:
    from feast.protos.feast.types.Value_pb2 import FloatList, Value

    driver = int(feast_repo.ids["driver"][20])
    (key,) = redis_keys([driver], "driver_id", PROJECT)
    store = await open_store()
    version = versions_of(await store.current_versions(["driver_stats"]))
    string = Value(string_val="fast").SerializeToString()
    conv_rate, embedding = field_name("driver_stats", "conv_rate"), field_name("driver_stats", "embedding")
    wrong_type = rf"driver_stats\] feature 'conv_rate' of entity {driver}: expected float_val, .* holds string_val"
    with overwritten(redis, {key: {conv_rate: string}}), pytest.raises(CorruptValue, match=wrong_type):
        await store.lookup("driver_stats", np.array([driver]), version=version)
    short = Value(float_list_val=FloatList(val=[1.0, 2.0])).SerializeToString()
    wrong_length = "expected 8 values, the online store holds 2"
    with overwritten(redis, {key: {embedding: short}}), pytest.raises(CorruptValue, match=wrong_length):
        await store.lookup("driver_stats", np.array([driver]), version=version)


def test_serving_never_imports_feast(definitions: FeastRepo, feast_repo: MaterializedRepo, redis: RedisServer) -> None:
    # The registry is read at startup; lookups must not load Feast (the exact path parses the wire itself):
    # its import takes seconds and its objects weigh on the serving process. Checked in a fresh interpreter.
    written = {entity: ids.tolist() for entity, ids in feast_repo.ids.items()}
    script = f"""
import asyncio, pickle, sys
import numpy as np
from kvstore.feast_store import FeastRedisStore
definitions = pickle.loads({pickle.dumps(definitions)!r})
ids = {written!r}
async def main():
    store = FeastRedisStore(lambda: definitions, url={redis.url!r})
    await store.start()
    versions = await store.current_versions({list(SERVABLE)!r})
    for view, entity in {VIEW_ENTITY!r}.items():
        lookup = await store.lookup(view, np.array(ids[entity]), version=versions[view])
        assert lookup.found.all(), view
    await store.close()
asyncio.run(main())
print(sorted(name for name in sys.modules if name.split(".")[0] in ("feast", "pandas", "pyarrow")))
"""
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_rows_older_than_the_views_ttl_are_missing_unless_ttl_is_not_enforced(
    feast_repo: MaterializedRepo, open_store: Callable[..., Any]
) -> None:
    two_days_on = time.time() + 2 * 86400  # driver_stats: ttl 1 day, driver_flags: none
    late = await open_store(clock=lambda: two_days_on)
    lenient = await open_store(clock=lambda: two_days_on, enforce_ttl=False)
    ids = feast_repo.ids["driver"]
    versions = await late.current_versions(["driver_stats", "driver_flags"])
    assert not (await late.lookup("driver_stats", ids, version=versions["driver_stats"])).found.any()
    assert (await late.lookup("driver_flags", ids, version=versions["driver_flags"])).found.all()
    assert (await lenient.lookup("driver_stats", ids, version=versions["driver_stats"])).found.all()

    # member_profile (ttl 2 h): every event is within the hour before `now`, so 59 minutes after `now`
    # every row is younger than 2 h, and 2 h and a second after `now` none is.
    member_ids = feast_repo.ids["member"]
    written = feast_repo.now.timestamp()
    at_ttl = await open_store(clock=lambda: written + 3600 - 60)
    past_ttl = await open_store(clock=lambda: written + 7200 + 1)
    version = versions_of(await at_ttl.current_versions(["member_profile"]))
    assert (await at_ttl.lookup("member_profile", member_ids, version=version)).found.all()
    assert not (await past_ttl.lookup("member_profile", member_ids, version=version)).found.any()


def versions_of(versions: dict[str, str]) -> str:
    (version,) = versions.values()
    return version


async def test_empty_query(open_store: Callable[..., Any]) -> None:
    store = await open_store()
    version = versions_of(await store.current_versions(["driver_stats"]))
    lookup = await store.lookup("driver_stats", np.zeros(0, dtype=np.int64), version=version)
    assert lookup.vectors.shape == (0, 11)
    assert lookup.found.shape == (0,)


# -- versions, names and errors ------------------------------------------------------------------------------


async def test_versions_name_the_project_and_definition_and_are_stable(
    definitions: FeastRepo, open_store: Callable[..., Any]
) -> None:
    first, second = await open_store(), await open_store()
    versions = await first.current_versions(list(SERVABLE))
    assert versions == await second.current_versions(list(SERVABLE))
    assert all(v.startswith(f"{PROJECT}-") for v in versions.values())
    assert len(set(versions.values())) == len(SERVABLE)
    view = definitions.views["driver_stats"]
    changed = dataclasses.replace(view, ttl_s=60.0)
    assert changed.digest(PROJECT, 3) != view.digest(PROJECT, 3) == versions["driver_stats"].split("-")[-1]

    with pytest.raises(TableNotFound, match="one live definition"):
        await first.lookup("driver_stats", np.array([1]), version=versions["driver_flags"])


async def test_unknown_and_unservable_views_are_table_not_found(open_store: Callable[..., Any]) -> None:
    store = await open_store()
    with pytest.raises(TableNotFound, match=r"no Feast feature view 'nope'; views: \['driver_flags'"):
        await store.current_versions(["nope"])
    with pytest.raises(TableNotFound, match="'driver_names' feature 'name' is STRING"):
        await store.current_versions(["driver_names"])


async def test_store_is_an_embedding_store_and_reports_an_unreachable_server(
    definitions: FeastRepo, tmp_path: Path
) -> None:
    store = FeastRedisStore(lambda: definitions, url=f"redis://127.0.0.1:{free_port()}/0")
    assert isinstance(store, EmbeddingStore)
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1"):
        await store.start()
    with pytest.raises(StoreUnavailable, match="not started"):
        await store.current_versions(["driver_stats"])


async def test_a_server_asking_for_a_password_is_unavailable_without_it(definitions: FeastRepo, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "locked").start()
    try:
        server.command("CONFIG", "SET", "requirepass", "s3cret")
        store = FeastRedisStore(lambda: definitions, url=f"redis://127.0.0.1:{server.port}/0")
        with pytest.raises(StoreUnavailable, match="answered PING with NOAUTH"):
            await store.start()
        store = FeastRedisStore(lambda: definitions, url=f"redis://:s3cret@127.0.0.1:{server.port}/0")
        await store.start()
        version = versions_of(await store.current_versions(["driver_flags"]))
        assert not (await store.lookup("driver_flags", np.array([1, 2]), version=version)).found.any()
        await store.close()
    finally:
        server.stop()


async def test_config_builds_a_working_store_from_the_repository_or_a_registry_file(
    feast_repo: MaterializedRepo, redis: RedisServer
) -> None:
    from pydantic import TypeAdapter

    for config in (
        TypeAdapter(FeastStoreConfig).validate_python({"kind": "feast", "repo_path": str(feast_repo.path)}),
        FeastStoreConfig(registry_path=feast_repo.path / "registry.db", project=PROJECT, url=redis.url),
    ):
        store = config.build()
        await store.start()
        try:
            version = versions_of(await store.current_versions(["member_profile"]))
            lookup = await store.lookup("member_profile", feast_repo.ids["member"], version=version)
            assert lookup.found.all()
        finally:
            await store.close()
    with pytest.raises(ValidationError, match="exactly one of repo_path"):
        FeastStoreConfig()
    with pytest.raises(ValidationError, match="needs project and url"):
        FeastStoreConfig(registry_path=feast_repo.path / "registry.db")


# -- declarations -------------------------------------------------------------------------------------------


def test_declarations_describe_the_feast_views(feast_repo: MaterializedRepo) -> None:
    document = views_from_feast(
        feast_repo.path, views=list(SERVABLE), entity_keys={"driver": "candidate"}, store="feast"
    )
    assert document["entities"] == [
        {"name": "driver", "key": "candidate", "description": "a driver"},
        {"name": "member", "key": "request", "description": "a member"},
    ]
    views = {view["name"]: view for view in document["views"]}
    assert list(views) == list(SERVABLE)
    stats = views["driver_stats"]
    assert {k: v for k, v in stats.items() if k != "features"} == {
        "name": "driver_stats",
        "entity": "driver",
        "table": "driver_stats",
        "store": "feast",
        "dtype": "float32",
        "max_age_s": 86400,
        "owner": "ranking@example.com",
        "tags": ["pii", "team=ranking"],
        "description": "driver statistics",
    }
    assert stats["features"] == [
        {"name": "conv_rate", "shape": [], "default": 0.0, "description": "conversion rate"},
        {"name": "acc_rate", "shape": [], "default": 0.0},
        {"name": "trips", "shape": [], "default": 0.0},
        {"name": "embedding", "shape": [8], "default": 0.0},
    ]
    flags = views["driver_flags"]
    assert flags["dtype"] == "int64"
    assert "max_age_s" not in flags
    assert flags["features"] == [
        {"name": "active", "shape": [], "default": 0},
        {"name": "rank", "shape": [], "default": 0},
        {"name": "history", "shape": [3], "default": 0, "tags": ["length=3"]},
    ]
    profile = views["member_profile"]
    assert (profile["entity"], profile["max_age_s"]) == ("member", 7200)
    assert [f["shape"] for f in profile["features"]] == [[], [2], [4]]


def test_unsupported_types_are_named_with_their_view_and_feature(
    feast_repo: MaterializedRepo, definitions: FeastRepo
) -> None:
    with pytest.raises(UnsupportedFeastView, match="'driver_names' feature 'name' is STRING"):
        views_from_feast(feast_repo.path)
    with pytest.raises(ValueError, match="no feature view 'nope'"):
        declarations(definitions, views=["nope"])
    with pytest.raises(ValueError, match="key must be"):
        declarations(definitions, views=["driver_stats"], entity_keys={"driver": "sideways"})
    stats = definitions.views["driver_stats"]
    renamed = dataclasses.replace(stats, features=(dataclasses.replace(stats.features[0], name="convRate"),))
    odd = dataclasses.replace(definitions, views={"driver_stats": renamed})
    with pytest.raises(UnsupportedFeastView, match="'driver_stats': feature name 'convRate' is not a Quasar name"):
        declarations(odd, views=["driver_stats"])


def test_registry_file_and_repository_read_the_same_views(
    feast_repo: MaterializedRepo, definitions: FeastRepo, redis: RedisServer
) -> None:
    bare = load_feast_repo(registry_path=feast_repo.path / "registry.db", project=PROJECT)
    assert bare.views == definitions.views
    assert bare.unsupported == definitions.unsupported
    assert bare.redis_url is None
    assert "names no online store" in bare.online_store_problem
    assert definitions.redis_url == redis.url
    with pytest.raises(ValueError, match=r"no feature_store\.yaml"):
        load_feast_repo(feast_repo.path / "nowhere")


def test_feast_connection_strings_become_redis_urls() -> None:
    assert redis_url("redis:6380") == "redis://redis:6380/0"
    assert redis_url("localhost:6379,db=2,username=u,password=p@ss") == "redis://u:p%40ss@localhost:6379/2"
    with pytest.raises(ValueError, match="ssl"):
        redis_url("host:6379,ssl=true")
