from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from kvstore.embedded import (
    EmbeddedStore,
    current_version,
    list_versions,
    set_current,
    verify_version,
    write_version,
)
from kvstore.errors import CorruptValue, StoreUnavailable, TableNotFound

IDS = np.array([30, 10, 20, 40], dtype=np.int64)


def vectors(n: int = 4, dim: int = 3, offset: float = 0.0) -> np.ndarray:
    return (np.arange(n * dim, dtype=np.float32).reshape(n, dim) / 7 + offset).astype(np.float32)


@pytest_asyncio.fixture(loop_scope="function")
async def store(tmp_path: Path) -> AsyncIterator[EmbeddedStore]:
    set_current(tmp_path, "item", write_version(tmp_path, "item", IDS, vectors(), version="v1"))
    store = EmbeddedStore(tmp_path)
    await store.start()
    yield store
    await store.close()


# -- writer ---------------------------------------------------------------------------------------


def test_write_version_lays_out_sorted_ids_vectors_and_meta(tmp_path: Path) -> None:
    version = write_version(tmp_path, "item", IDS, vectors(), dtype="float16")
    directory = tmp_path / "item" / "versions" / version
    np.testing.assert_array_equal(np.load(directory / "ids.npy"), [10, 20, 30, 40])
    stored = np.load(directory / "vectors.npy")
    assert stored.dtype == np.float16
    np.testing.assert_array_equal(stored, vectors()[[1, 2, 0, 3]].astype(np.float16))
    meta = json.loads((directory / "meta.json").read_text())
    assert (meta["dim"], meta["dtype"], meta["count"]) == (3, "float16", 4)
    assert meta["checksum"].startswith("sha256:")
    assert meta["created_at"].endswith("+00:00")
    assert current_version(tmp_path, "item") is None  # writing does not switch
    assert [p.name for p in (tmp_path / "item" / "versions").iterdir()] == [version]  # no staging left


def test_default_versions_are_unique_and_sort_by_time(tmp_path: Path) -> None:
    made = [write_version(tmp_path, "t", IDS, vectors()) for _ in range(3)]
    assert len(set(made)) == 3
    assert list_versions(tmp_path, "t") == made == sorted(made)
    assert made[0][:8].isdigit()
    assert made[0][8] == "T"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": np.array([1, 2, 2, 3]), "vectors": vectors()}, "1 duplicate ids, e.g. 2"),
        ({"ids": IDS, "vectors": vectors(3)}, r"vectors must be \[4, dim >= 1\]"),
        ({"ids": IDS.astype(np.float64), "vectors": vectors()}, "ids must be a 1-D integer array"),
        ({"ids": IDS, "vectors": vectors() * 1e6, "dtype": "float16"}, "not finite as float16"),
        ({"ids": IDS, "vectors": vectors(), "dtype": "int8"}, "dtype must be one of"),
        ({"ids": IDS, "vectors": vectors(), "version": "../escape"}, "version name '../escape' must match"),
    ],
    ids=["duplicates", "shape", "float-ids", "float16-overflow", "dtype", "version-name"],
)
def test_write_version_rejects_bad_tables(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_version(tmp_path, "t", **kwargs)  # type: ignore[arg-type]
    assert list_versions(tmp_path, "t") == []


def test_an_explicit_version_is_written_once(tmp_path: Path) -> None:
    write_version(tmp_path, "t", IDS, vectors(), version="v1")
    with pytest.raises(ValueError, match="version 'v1' of 't' already exists"):
        write_version(tmp_path, "t", IDS, vectors(offset=1), version="v1")
    np.testing.assert_array_equal(np.load(tmp_path / "t" / "versions" / "v1" / "vectors.npy")[0], vectors()[1])


def test_set_current_switches_and_rolls_back(tmp_path: Path) -> None:
    v1 = write_version(tmp_path, "t", IDS, vectors(), version="v1")
    v2 = write_version(tmp_path, "t", IDS, vectors(), version="v2")
    set_current(tmp_path, "t", v1)
    set_current(tmp_path, "t", v2)
    assert current_version(tmp_path, "t") == "v2"
    set_current(tmp_path, "t", v1)  # rollback
    assert current_version(tmp_path, "t") == "v1"
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["CURRENT", "versions"]  # no temp files left
    with pytest.raises(TableNotFound, match=r"no version 'v3'; versions: \['v1', 'v2'\]"):
        set_current(tmp_path, "t", "v3")
    assert current_version(tmp_path, "t") == "v1"


def test_verify_version_detects_corruption(tmp_path: Path) -> None:
    version = write_version(tmp_path, "t", IDS, vectors(), version="v1")
    info = verify_version(tmp_path, "t", version)
    assert (info.name, info.version, info.dim, info.dtype, info.count) == ("t", "v1", 3, "float32", 4)
    path = tmp_path / "t" / "versions" / "v1" / "vectors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptValue, match="checksum mismatch"):
        verify_version(tmp_path, "t", version)


def rewrite_in_place(path: Path, text: str) -> None:
    with open(path, "r+") as file:
        file.write(text)


# -- reader ---------------------------------------------------------------------------------------


async def test_lookup_returns_rows_in_query_order_with_a_found_mask(store: EmbeddedStore) -> None:
    result = await store.lookup("item", np.array([40, 5, 10, 10, 99, 30]), version="v1")
    expected = vectors()
    assert result.version == "v1"
    assert result.vectors.dtype == np.float32
    assert result.vectors.shape == (6, 3)
    assert result.found.tolist() == [True, False, True, True, False, True]
    assert result.missing == 2
    np.testing.assert_array_equal(result.vectors[[0, 2, 3, 5]], expected[[3, 1, 1, 0]])
    np.testing.assert_array_equal(result.vectors[[1, 4]], 0)


async def test_float16_tables_come_back_as_float32_within_tolerance(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    set_current(tmp_path, "h", write_version(tmp_path, "h", IDS, data, dtype="float16", version="v1"))
    store = EmbeddedStore(tmp_path)
    await store.start()
    result = await store.lookup("h", IDS, version="v1")
    assert result.vectors.dtype == np.float32
    np.testing.assert_allclose(result.vectors, data, rtol=1e-3, atol=1e-4)
    assert (await store.info("h")).dtype == "float16"


async def test_a_reader_pinned_to_v1_keeps_reading_v1_after_the_switch(store: EmbeddedStore, tmp_path: Path) -> None:
    pinned = (await store.current_versions(["item"]))["item"]
    assert pinned == "v1"
    write_version(tmp_path, "item", IDS, vectors(offset=100), version="v2")
    set_current(tmp_path, "item", "v2")

    old = await store.lookup("item", np.array([10]), version=pinned)
    np.testing.assert_array_equal(old.vectors[0], vectors()[1])
    assert await store.current_versions(["item"]) == {"item": "v2"}
    new = await store.lookup("item", np.array([10]), version="v2")
    np.testing.assert_array_equal(new.vectors[0], vectors(offset=100)[1])

    set_current(tmp_path, "item", "v1")  # rollback is seen as well
    assert await store.current_versions(["item"]) == {"item": "v1"}


async def test_current_is_reread_only_when_the_file_changes(store: EmbeddedStore, tmp_path: Path) -> None:
    assert await store.current_versions(["item"]) == {"item": "v1"}
    write_version(tmp_path, "item", IDS, vectors(), version="v2")
    # An in-place rewrite (same inode) with other content and size is still noticed.
    rewrite_in_place(tmp_path / "item" / "CURRENT", "v2\n\n")
    assert await store.current_versions(["item"]) == {"item": "v2"}
    (tmp_path / "item" / "CURRENT").unlink()
    with pytest.raises(TableNotFound, match="has no CURRENT"):
        await store.current_versions(["item"])


async def test_old_versions_are_remapped_after_eviction(tmp_path: Path) -> None:
    for index in range(3):
        write_version(tmp_path, "t", IDS, vectors(offset=index), version=f"v{index}")
    set_current(tmp_path, "t", "v2")
    store = EmbeddedStore(tmp_path, max_versions_per_table=1)
    await store.start()
    for version in ("v0", "v1", "v0", "v2"):
        result = await store.lookup("t", np.array([10]), version=version)
        np.testing.assert_array_equal(result.vectors[0], vectors(offset=int(version[1]))[1])


async def test_unknown_tables_and_versions_name_what_exists(store: EmbeddedStore) -> None:
    with pytest.raises(TableNotFound, match=r"no table 'user'; tables: \['item'\]") as raised:
        await store.lookup("user", IDS, version="v1")
    assert (raised.value.store, raised.value.table) == ("embedded", "user")
    with pytest.raises(TableNotFound, match="no table 'user'"):
        await store.current_versions(["item", "user"])
    with pytest.raises(TableNotFound, match=r"no version 'v9'; versions: \['v1'\]"):
        await store.lookup("item", IDS, version="v9")
    with pytest.raises(TableNotFound):
        await store.lookup("item", IDS, version="../../etc")


async def test_a_table_created_after_start_is_found(store: EmbeddedStore, tmp_path: Path) -> None:
    set_current(tmp_path, "late", write_version(tmp_path, "late", IDS, vectors(), version="v1"))
    assert await store.current_versions(["late"]) == {"late": "v1"}
    assert "late" in store.tables


async def test_empty_queries_and_empty_tables(store: EmbeddedStore, tmp_path: Path) -> None:
    assert (await store.lookup("item", np.array([], dtype=np.int64), version="v1")).vectors.shape == (0, 3)
    set_current(tmp_path, "e", write_version(tmp_path, "e", np.array([], np.int64), np.zeros((0, 2)), version="v1"))
    result = await store.lookup("e", np.array([1, 2]), version="v1")
    assert result.vectors.shape == (2, 2)
    assert not result.found.any()


async def test_meta_disagreeing_with_arrays_is_corrupt(tmp_path: Path) -> None:
    write_version(tmp_path, "t", IDS, vectors(), version="v1")
    set_current(tmp_path, "t", "v1")
    meta_path = tmp_path / "t" / "versions" / "v1" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "dim": 4}))
    with pytest.raises(CorruptValue, match=r"disagree with meta\.json"):
        await EmbeddedStore(tmp_path).start()


async def test_lifecycle_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="not a directory"):
        await EmbeddedStore(tmp_path / "missing").start()
    store = EmbeddedStore(tmp_path)
    with pytest.raises(StoreUnavailable, match="not started"):
        await store.current_versions(["item"])


async def test_non_integer_ids_are_a_programmer_error(store: EmbeddedStore) -> None:
    with pytest.raises(ValueError, match="ids must be a 1-D integer array"):
        await store.lookup("item", np.array([1.5]), version="v1")
