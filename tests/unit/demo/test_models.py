"""The built world's models and tables: formats, layouts, parity, and that the ranker learned something."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import xgboost as xgb

from features import load_registry
from kvstore.embedded import EmbeddedStore
from quasar.demo import layout as fs
from quasar.demo import onnx_export
from quasar.demo.build import MEMBER_FEATURES_TABLE, WorldManifest, world_corpus
from quasar.demo.first_pass import load_first_pass, predict_first_pass
from quasar.demo.interactions import generate_interactions, roc_auc

World = tuple[Path, WorldManifest]


@pytest.fixture(scope="module")
def weights(world: World) -> dict[str, np.ndarray]:
    out, manifest = world
    with np.load(manifest.model_path(out, "ranker_weights")) as npz:
        return {name: npz[name] for name in npz.files}


def _rows(manifest: WorldManifest, n: int, seed: int) -> np.ndarray:
    """Plausible raw ranker inputs: embeddings-sized noise, dense columns on their own scales."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, (n, manifest.ranker_input_dim)).astype(np.float32)
    x[:, 4 * manifest.embedding_dim :] = rng.random((n, len(fs.DENSE_FEATURES))) * 5
    return x


def test_manifest_describes_the_layouts(world: World) -> None:
    out, manifest = world
    assert manifest.objectives == fs.OBJECTIVES
    assert manifest.first_pass_features == fs.FIRST_PASS_FEATURES
    assert manifest.dense_features == fs.DENSE_FEATURES
    assert manifest.member_features == fs.MEMBER_FEATURES
    assert manifest.ranker_input_dim == fs.ranker_input_dim(manifest.embedding_dim)
    # every table the world wrote is a declared view's table, and the reverse
    declared = {view.table for view in load_registry(out / "features").views.values()}
    assert set(manifest.tables) == declared
    assert {*fs.EMBEDDING_TABLES, MEMBER_FEATURES_TABLE} <= declared
    for name, model in manifest.models.items():
        path = out / model.path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == model.sha256, name
        assert path.stat().st_size == model.size_bytes, name
    assert json.loads((out / "world.json").read_text())["seed"] == manifest.seed


def test_first_pass_model(world: World) -> None:
    out, manifest = world
    booster = load_first_pass(out / "models" / "first_pass.ubj")
    assert booster.num_features() == len(fs.FIRST_PASS_FEATURES)
    assert booster.num_boosted_rounds() == 60
    corpus = world_corpus(out)
    items = np.arange(1, 301, dtype=np.int64)
    features = fs.first_pass_features(corpus, 3, items)
    scores = predict_first_pass(booster, features)
    assert scores.shape == (300,)
    assert ((scores > 0) & (scores < 1)).all()
    assert scores.std() > 0
    # A plain array through inplace_predict, as the engine calls it.
    np.testing.assert_allclose(booster.inplace_predict(features), scores, rtol=1e-6)
    np.testing.assert_allclose(booster.predict(xgb.DMatrix(features)), scores, rtol=1e-6)
    with pytest.raises(ValueError, match="first-pass features"):
        predict_first_pass(booster, features[:, :-1])
    assert manifest.training["first_pass"]["heldout_auc"] > 0.65


def test_onnx_model_is_valid_and_described(world: World) -> None:
    out, manifest = world
    model = onnx.load(str(manifest.model_path(out, "ranker")))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == onnx_export.OPSET
    props = {p.key: p.value for p in model.metadata_props}
    assert props["version"] == manifest.ranker_version
    assert json.loads(props["objectives"]) == list(fs.OBJECTIVES)
    assert json.loads(props["dense_features"]) == list(fs.DENSE_FEATURES)
    assert int(props["embedding_dim"]) == manifest.embedding_dim
    session = ort.InferenceSession(str(manifest.model_path(out, "ranker")), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == (fs.RANKER_INPUT, "tensor(float)", manifest.ranker_input_dim)
    assert (outp.name, outp.type, outp.shape[1]) == (fs.RANKER_OUTPUT, "tensor(float)", len(fs.OBJECTIVES))


@pytest.mark.parametrize("n", [1, 256, 1_000])
def test_onnx_matches_numpy_forward(world: World, weights: dict[str, np.ndarray], n: int) -> None:
    out, manifest = world
    x = _rows(manifest, n, seed=n)
    onnx_scores = onnx_export.run_onnx(manifest.model_path(out, "ranker"), x)
    numpy_scores = onnx_export.dense_forward(weights, x)
    assert onnx_scores.shape == (n, len(fs.OBJECTIVES))
    assert onnx_scores.dtype == np.float32
    assert float(np.abs(onnx_scores - numpy_scores).max()) <= 1e-5
    assert manifest.training["parity"]["max_abs_diff"] <= 1e-5


def test_parity_check_fails_loudly() -> None:
    a = np.zeros((4, 4), dtype=np.float32)
    assert onnx_export.check_parity({"a": a, "b": a + 1e-6}) == pytest.approx(1e-6)
    with pytest.raises(onnx_export.ParityError, match="differ"):
        onnx_export.check_parity({"a": a, "b": a, "c": a + 1e-3})
    with pytest.raises(onnx_export.ParityError, match="shape"):
        onnx_export.check_parity({"a": a, "b": a[:2]})
    with pytest.raises(onnx_export.ParityError):
        onnx_export.check_parity({"a": a, "b": a + np.nan})


async def test_store_tables_hold_the_exported_weights(world: World, weights: dict[str, np.ndarray]) -> None:
    out, manifest = world
    store = EmbeddedStore(out / "store")
    await store.start()
    try:
        versions = await store.current_versions([*manifest.tables])
        assert versions == {name: entry.version for name, entry in manifest.tables.items()}
        for table in fs.EMBEDDING_TABLES:
            entry = manifest.tables[table]
            ids = np.arange(entry.first_id, entry.first_id + entry.count, dtype=np.int64)
            found = await store.lookup(table, ids, version=versions[table])
            assert found.found.all()
            assert found.vectors.shape == (entry.count, manifest.embedding_dim)
            np.testing.assert_array_equal(found.vectors, weights[f"embedding_{table}"][ids])
            outside = await store.lookup(
                table, np.array([entry.first_id - 1, entry.first_id + entry.count]), version=versions[table]
            )
            assert not outside.found.any()
        corpus = world_corpus(out)
        member_ids = np.arange(1, corpus.n_members + 1, dtype=np.int64)
        rows = await store.lookup(MEMBER_FEATURES_TABLE, member_ids, version=versions[MEMBER_FEATURES_TABLE])
        np.testing.assert_array_equal(rows.vectors, fs.member_feature_rows(corpus, member_ids))
    finally:
        await store.close()


def test_two_stage_serving_path_ranks_well(world: World, weights: dict[str, np.ndarray]) -> None:
    """Fresh impressions scored the way the serving steps do it (per member, single-member functions,
    vectors from the exported tables, ONNX Runtime): the click head beats chance clearly."""
    out, manifest = world
    corpus = world_corpus(out)
    booster = load_first_pass(out / "models" / "first_pass.ubj")
    fresh = generate_interactions(corpus, 6_000, seed=1234)
    inputs = np.empty((len(fresh), manifest.ranker_input_dim), dtype=np.float32)
    for member in np.unique(fresh.member_id):
        rows = np.flatnonzero(fresh.member_id == member)
        items = fresh.item_id[rows]
        first_pass = predict_first_pass(booster, fs.first_pass_features(corpus, int(member), items))
        flat, indptr = fs.hashtag_ids(corpus, items)
        inputs[rows] = fs.ranker_input(
            weights["embedding_member"][member],
            weights["embedding_item"][items],
            weights["embedding_author"][corpus.item_author[items]],
            fs.pool_multi_valued(weights["embedding_hashtag"][flat], indptr, "mean"),
            fs.dense_features(corpus, int(member), items, first_pass, fs.member_feature_row(corpus, int(member))),
        )
    scores = onnx_export.run_onnx(manifest.model_path(out, "ranker"), inputs)
    aucs = {name: roc_auc(fresh.labels[:, j], scores[:, j]) for j, name in enumerate(fs.OBJECTIVES)}
    assert aucs["click"] > 0.6, aucs
    assert all(auc > 0.6 for auc in aucs.values()), aucs
    assert manifest.training["ranker"]["heldout_auc"]["click"] > 0.6
