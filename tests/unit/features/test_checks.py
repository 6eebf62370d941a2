from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features import DeclarationError, check_signature_widths, check_views, load_registry, load_signatures
from kvstore.fake import InMemoryStore
from tests.unit.features.product import TABLES, write_product


async def _store(skip: str = "", **overrides: tuple[np.ndarray, np.ndarray, str]) -> InMemoryStore:
    store = InMemoryStore()
    for table, (ids, rows) in TABLES.items():
        if table == skip:
            continue
        ids, rows, dtype = overrides.get(table, (ids, rows, "int64" if rows.dtype == np.int64 else "float32"))
        store.put(table, ids, rows, dtype=dtype)
    await store.start()
    return store


async def test_views_matching_their_tables_pass(tmp_path: Path) -> None:
    registry = load_registry(write_product(tmp_path) / "features")
    await check_views(registry, {"default": await _store()})


async def test_a_missing_table_fails_at_startup_naming_view_table_and_file(tmp_path: Path) -> None:
    registry = load_registry(write_product(tmp_path) / "features")
    with pytest.raises(
        DeclarationError,
        match=r"product\.yaml: views\[4\]\.table: view 'author_embedding': store 'memory' has no table "
        r"'author_embedding'",
    ):
        await check_views(registry, {"default": await _store(skip="author_embedding")})


async def test_a_wrong_dtype_fails_at_startup_naming_both(tmp_path: Path) -> None:
    registry = load_registry(write_product(tmp_path) / "features")
    ids, rows = TABLES["item_meta"]
    store = await _store(item_meta=(ids, rows.astype(np.float32), "float32"))
    with pytest.raises(
        DeclarationError,
        match=r"views\[2\]\.dtype: view 'item_meta' declares int64, table 'item_meta'@v1 holds float32",
    ):
        await check_views(registry, {"default": store})


async def test_a_wrong_width_fails_at_startup_naming_both(tmp_path: Path) -> None:
    registry = load_registry(write_product(tmp_path) / "features")
    store = await _store(author_embedding=(np.array([10]), np.ones((1, 3), np.float32), "float32"))
    with pytest.raises(
        DeclarationError,
        match=r"view 'author_embedding' declares 2 values per row, table 'author_embedding'@v1 holds 3",
    ):
        await check_views(registry, {"default": store})


async def test_an_unknown_store_is_named(tmp_path: Path) -> None:
    from tests.unit.features.product import FEATURES_YAML

    write_product(tmp_path, FEATURES_YAML.replace("table: item_stats\n", "table: item_stats\n    store: feast\n"))
    registry = load_registry(tmp_path / "features")
    with pytest.raises(DeclarationError, match=r"views\[3\]\.store: no store named 'feast' is configured"):
        await check_views(registry, {"default": await _store()})


def test_signature_width_must_equal_each_engines_input(tmp_path: Path) -> None:
    write_product(tmp_path)
    signature = load_signatures(tmp_path / "models", load_registry(tmp_path / "features"))["ranker"]
    check_signature_widths(signature, {"local_onnx/ranker": {"features": (-1, 10)}})
    with pytest.raises(
        DeclarationError,
        match=r"model 'ranker' input 'features' declares 10 values per row, engine triton/ranker takes 12",
    ):
        check_signature_widths(
            signature, {"local_onnx/ranker": {"features": (-1, 10)}, "triton/ranker": {"features": (-1, 12)}}
        )
    with pytest.raises(DeclarationError, match=r"engine onnx/x has no input 'features' \(inputs: \['dense'\]\)"):
        check_signature_widths(signature, {"onnx/x": {"dense": (-1, 10)}})
