from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features import ArrayReader, InputPlan, StoreReader, load_registry, load_signatures
from features.readers import ViewShapeError
from kvstore.fake import InMemoryStore
from tests.unit.features.product import NOW_S, TABLES, write_product


@pytest.fixture
def declared(tmp_path: Path):  # type: ignore[no-untyped-def]
    write_product(tmp_path)
    registry = load_registry(tmp_path / "features")
    signature = load_signatures(tmp_path / "models", registry)["ranker"]
    return registry, signature


async def _store() -> InMemoryStore:
    store = InMemoryStore()
    for table, (ids, rows) in TABLES.items():
        store.put(table, ids, rows, dtype="int64" if rows.dtype == np.int64 else "float32")
    await store.start()
    return store


async def test_features_are_computed_from_the_declarations(declared) -> None:  # type: ignore[no-untyped-def]
    registry, signature = declared
    plan = InputPlan(registry, signature.inputs[0].features)
    items = np.array([100, 101, 102, 999], np.int64)  # 999 has no rows anywhere: defaults
    frame = await plan.frame(
        ArrayReader(TABLES),
        member_ids=np.array([1]),
        candidate_ids=items,
        columns={"first_pass_score": np.array([0.1, 0.2, 0.3, 0.4], np.float32)},
        now_s=NOW_S,
    )
    x = plan.tensor(frame, signature.inputs[0])
    assert x.shape == (4, 10)
    assert x.dtype == np.float32
    assert x.flags.c_contiguous
    np.testing.assert_allclose(x[:, 0], 0.9)  # member activity broadcast
    np.testing.assert_allclose(x[:, 1], np.log1p([0.0, np.e - 1, 3.0, 0.0]), rtol=1e-6)
    np.testing.assert_allclose(x[:, 2], [1.0, 2.0, 0.0, NOW_S / 86400])  # age in days; missing row: created at 0
    np.testing.assert_allclose(x[:, 3], [1.0, 0.0, 1.0, 0.0])  # member topics [1, 0] . item topics
    np.testing.assert_array_equal(x[:, 4], [1.0, 0.0, 1.0, 0.0])  # authors 10, 12, 11, 0 vs connections 10, 11
    np.testing.assert_allclose(x[:, 5:7], [[1, 2], [0, 0], [3, 4], [0, 0]])  # joined through item_meta.author_id
    np.testing.assert_allclose(x[:, 7:9], [[0.5, 0.5], [0, 1], [0, 0], [0, 0]])  # mean of hashtag vectors
    np.testing.assert_allclose(x[:, 9], [0.1, 0.2, 0.3, 0.4])


class _CountedReads(dict[str, np.ndarray]):
    """Precomputed values that count which were read (a lazy view gathers on every read)."""

    def __init__(self, values: dict[str, np.ndarray]) -> None:
        super().__init__(values)
        self.read: list[str] = []

    def __getitem__(self, name: str) -> np.ndarray:
        self.read.append(name)
        return super().__getitem__(name)

    def items(self):  # type: ignore[no-untyped-def]
        return ((name, self[name]) for name in self)


async def test_precomputed_features_are_taken_and_only_the_plans_own_are_read(declared) -> None:  # type: ignore[no-untyped-def]
    registry, signature = declared
    plan = InputPlan(registry, signature.inputs[0].features)
    items = np.array([100, 101, 102, 999], np.int64)
    columns = {"first_pass_score": np.array([0.1, 0.2, 0.3, 0.4], np.float32)}
    given = np.array([[7.0], [8.0], [9.0], [10.0]], np.float32)
    precomputed = _CountedReads({"item_log_popularity": given, "first_pass_only": np.zeros((4, 5), np.float32)})

    frame = await plan.frame(
        ArrayReader(TABLES),
        member_ids=np.array([1]),
        candidate_ids=items,
        columns=columns,
        now_s=NOW_S,
        precomputed=precomputed,
    )

    assert precomputed.read == ["item_log_popularity"]  # a feature the plan does not need is never gathered
    x = plan.tensor(frame, signature.inputs[0])
    np.testing.assert_array_equal(x[:, 1], given[:, 0])  # taken as given, not recomputed from the store
    np.testing.assert_allclose(x[:, 2], [1.0, 2.0, 0.0, NOW_S / 86400])  # the rest computed as usual


async def test_serving_and_training_readers_assemble_identical_inputs(declared) -> None:  # type: ignore[no-untyped-def]
    registry, signature = declared
    plan = InputPlan(registry, signature.inputs[0].features)
    store = await _store()
    versions = await store.current_versions([v.table for v in plan.views])
    served_reader = StoreReader({"default": store}, versions, timeout_s=1.0)
    items = np.array([102, 100, 101], np.int64)
    kwargs = {"candidate_ids": items, "columns": {"first_pass_score": np.zeros(3, np.float32)}, "now_s": NOW_S}
    served = plan.tensor(await plan.frame(served_reader, member_ids=np.array([2]), **kwargs), signature.inputs[0])
    trained = plan.tensor(
        await plan.frame(ArrayReader(TABLES), member_ids=np.array([2, 2, 2]), **kwargs), signature.inputs[0]
    )
    np.testing.assert_array_equal(served, trained)
    assert served_reader.missing == {"author_embedding": 1}  # author 12 has no row


async def test_member_rows_read_once_are_reused(declared) -> None:  # type: ignore[no-untyped-def]
    registry, signature = declared
    plan = InputPlan(registry, signature.inputs[0].features)
    store = await _store()
    versions = await store.current_versions([v.table for v in plan.views])
    known = {v.name: await ArrayReader(TABLES).read(v, np.array([1])) for v in plan.member_views()}
    await plan.frame(
        StoreReader({"default": store}, versions, timeout_s=1.0),
        member_ids=np.array([1]),
        candidate_ids=np.array([100], np.int64),
        columns={"first_pass_score": np.zeros(1, np.float32)},
        known=known,
        now_s=NOW_S,
    )
    assert {lookup.table for lookup in store.lookups}.isdisjoint({"member_profile", "member_graph"})


async def test_a_table_narrower_than_its_view_is_an_error(declared) -> None:  # type: ignore[no-untyped-def]
    registry, signature = declared
    plan = InputPlan(registry, signature.inputs[0].features)
    store = await _store()
    store.put("item_stats", np.array([100]), np.array([[1.0, 2.0]], np.float32), version="narrow")
    versions = await store.current_versions([v.table for v in plan.views])
    with pytest.raises(
        ViewShapeError, match=r"view 'item_stats': table 'item_stats'@narrow rows have 2 values, the view declares 3"
    ):
        await plan.frame(
            StoreReader({"default": store}, versions, timeout_s=1.0),
            member_ids=np.array([1]),
            candidate_ids=np.array([100], np.int64),
            columns={"first_pass_score": np.zeros(1, np.float32)},
            now_s=NOW_S,
        )
