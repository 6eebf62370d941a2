"""The loader on the embedded store: source files, push (verified, then current), rollback, gc."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kvstore.admin import EmbeddedAdmin
from kvstore.embedded import current_version, list_versions
from kvstore.loader import VerificationError, gc, open_admin, push, read_table_file, rollback

IDS = np.array([30, 10, 20], dtype=np.int64)
VECTORS = np.arange(12, dtype=np.float32).reshape(3, 4) / 7


@pytest.fixture
async def admin(tmp_path: Path) -> EmbeddedAdmin:
    store = EmbeddedAdmin(tmp_path / "store")
    await store.start()
    return store


def test_reads_npz_npy_and_version_directories(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", ids=IDS, vectors=VECTORS)
    ids, vectors = read_table_file(tmp_path / "t.npz")
    assert ids.tolist() == IDS.tolist()
    assert np.array_equal(vectors, VECTORS)

    np.save(tmp_path / "plain.npy", VECTORS)
    ids, _ = read_table_file(tmp_path / "plain.npy", first_id=1)
    assert ids.tolist() == [1, 2, 3]

    structured = np.zeros(3, dtype=[("id", np.int64), ("vector", np.float32, (4,))])
    structured["id"], structured["vector"] = IDS, VECTORS
    np.save(tmp_path / "rows.npy", structured)
    ids, vectors = read_table_file(tmp_path / "rows.npy")
    assert ids.tolist() == IDS.tolist()
    assert np.array_equal(vectors, VECTORS)

    (tmp_path / "dir").mkdir()
    np.save(tmp_path / "dir" / "ids.npy", IDS)
    np.save(tmp_path / "dir" / "vectors.npy", VECTORS)
    assert read_table_file(tmp_path / "dir")[0].tolist() == IDS.tolist()


def test_rejects_files_that_are_not_tables(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", idx=IDS)
    with pytest.raises(ValueError, match="expected arrays 'ids' and 'vectors'"):
        read_table_file(tmp_path / "t.npz")
    np.savez(tmp_path / "u.npz", ids=IDS, vectors=VECTORS[:2])
    with pytest.raises(ValueError, match=r"vectors must be float or int64 \[3, dim\]"):
        read_table_file(tmp_path / "u.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"expected a \.npz"):
        read_table_file(tmp_path / "x.csv")


def test_store_specs(tmp_path: Path) -> None:
    assert isinstance(open_admin(f"embedded:{tmp_path}"), EmbeddedAdmin)
    redis = open_admin("redis://127.0.0.1:1/0?prefix=p&buckets=4")  # not started: no I/O
    assert (redis.name, getattr(redis, "prefix", None)) == ("redis", "p")
    for bad, message in (
        ("embedded:", "needs a path"),
        ("memcached://x", "store must be"),
        ("redis://h/0?shards=2", "unknown store options"),
    ):
        with pytest.raises(ValueError, match=message):
            open_admin(bad)


async def test_push_verifies_then_switches_and_rollback_and_gc(admin: EmbeddedAdmin) -> None:
    first = await push(admin, "item", IDS, VECTORS, version="v1")
    assert (first.version, first.previous, first.made_current, first.sampled) == ("v1", None, True, 3)
    second = await push(admin, "item", IDS, VECTORS + 1, version="v2", dtype="float16")
    assert (second.previous, await admin.current_version("item")) == ("v1", "v2")
    np.testing.assert_array_equal(
        (await admin.lookup("item", np.array([10]), version="v2")).vectors, (VECTORS[1:2] + 1).astype(np.float16)
    )
    staged = await push(admin, "item", IDS, VECTORS + 2, version="v3", make_current=False)
    assert (staged.made_current, await admin.current_version("item")) == (False, "v2")

    assert await rollback(admin, "item") == ("v2", "v1")
    assert current_version(admin.root, "item") == "v1"
    with pytest.raises(ValueError, match="no complete version older"):
        await rollback(admin, "item")
    assert await rollback(admin, "item", to="v3") == ("v1", "v3")

    versions = await admin.list_versions("item")
    assert [(v.info.version, v.info.dtype, v.current) for v in versions] == [
        ("v1", "float32", False),
        ("v2", "float16", False),
        ("v3", "float32", True),
    ]
    assert [v.info.version for v in await gc(admin, keep=1, dry_run=True)] == ["v1", "v2"]
    assert list_versions(admin.root, "item") == ["v1", "v2", "v3"]
    await rollback(admin, "item", to="v1")
    deleted = await gc(admin, keep=1)
    assert [v.info.version for v in deleted] == ["v2"]  # v1 is current, v3 the newest: both kept
    assert list_versions(admin.root, "item") == ["v1", "v3"]
    with pytest.raises(ValueError, match="is current"):
        await admin.delete_version("item", "v1")


async def test_a_push_that_does_not_read_back_is_not_made_current(admin: EmbeddedAdmin) -> None:
    class Lossy(EmbeddedAdmin):
        async def count_present(self, table: str, version: str, ids: np.ndarray) -> int:
            return len(ids) - 1

    lossy = Lossy(admin.root)
    await lossy.start()
    with pytest.raises(VerificationError, match="2 of 3 ids are stored"):
        await push(lossy, "item", IDS, VECTORS, version="v1")
    assert current_version(admin.root, "item") is None
    assert list_versions(admin.root, "item") == ["v1"]  # left for inspection; gc removes it
    assert [v.info.version for v in await gc(lossy, keep=1, dry_run=True)] == []


async def test_a_taken_version_name_is_refused(admin: EmbeddedAdmin) -> None:
    await push(admin, "item", IDS, VECTORS, version="v1")
    with pytest.raises(ValueError, match="already exists"):
        await push(admin, "item", IDS, VECTORS, version="v1")
