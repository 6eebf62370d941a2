"""The generated corpus: deterministic in its seed, and every structural invariant of remix.corpus holds."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from quasar.demo.build import WorldManifest
from quasar.demo.corpus import Corpus
from quasar.demo.world import MAX_AGE_HOURS, WorldSpec, generate_corpus
from remix.steps.candidates import ItemType

SPEC = WorldSpec(seed=21, members=2_000, items=20_000, hashtags=400)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate_corpus(SPEC)


def _arrays(corpus: Corpus) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(corpus, f.name)) for f in fields(corpus) if not f.name.startswith("n_")}


def _assert_csr(indptr: np.ndarray, indices: np.ndarray, rows: int, low: int, high: int) -> None:
    """indptr covers rows 0..rows (row 0 padding, empty), is monotone; values in [low, high]."""
    assert indptr.dtype == np.int64
    assert len(indptr) == rows + 2
    assert indptr[0] == 0
    assert indptr[1] == 0
    assert indptr[-1] == len(indices)
    assert (np.diff(indptr) >= 0).all()
    assert indices.min() >= low
    assert indices.max() <= high


def _sorted_unique_rows(indptr: np.ndarray, indices: np.ndarray) -> bool:
    owner = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    same_row = owner[1:] == owner[:-1]
    return bool((indices[1:][same_row] > indices[:-1][same_row]).all())


def test_same_seed_gives_identical_arrays(corpus: Corpus) -> None:
    again = generate_corpus(SPEC)
    for name, array in _arrays(corpus).items():
        other = _arrays(again)[name]
        assert array.dtype == other.dtype, name
        assert array.tobytes() == other.tobytes(), name


def test_other_seed_differs(corpus: Corpus) -> None:
    other = _arrays(generate_corpus(WorldSpec(seed=22, members=2_000, items=20_000, hashtags=400)))
    for name in ("item_author", "item_popularity", "connections_indices", "item_topics", "member_hashtags_indices"):
        assert not np.array_equal(_arrays(corpus)[name], other[name]), name


def test_sizes_dtypes_and_padding(corpus: Corpus) -> None:
    assert (corpus.n_members, corpus.n_items, corpus.n_hashtags) == (2_000, 20_000, 400)
    per_item = ("item_author", "item_type", "item_age_hours", "item_popularity", "item_topics")
    for name in per_item:
        assert len(getattr(corpus, name)) == corpus.n_items + 1, name
    assert len(corpus.member_topics) == len(corpus.member_activity) == corpus.n_members + 1
    assert corpus.item_author.dtype == np.int64
    assert corpus.item_type.dtype == np.int8
    assert corpus.item_topics.dtype == corpus.member_topics.dtype == np.float32
    assert corpus.item_topics.shape[1] == corpus.member_topics.shape[1] == SPEC.topic_dim
    for name in (*per_item, "member_topics", "member_activity"):
        assert not np.asarray(getattr(corpus, name))[0].any(), f"{name}[0] is padding"


def test_connections_symmetric_sorted_no_self_loops(corpus: Corpus) -> None:
    indptr, indices = corpus.connections_indptr, corpus.connections_indices
    _assert_csr(indptr, indices, corpus.n_members, 1, corpus.n_members)
    assert indices.dtype == np.int64
    assert _sorted_unique_rows(indptr, indices)
    owner = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    assert not (owner == indices).any()
    edges = set(zip(owner.tolist(), indices.tolist(), strict=True))
    assert all((b, a) in edges for a, b in edges)
    degree = np.diff(indptr)[1:]
    assert 35 <= degree.mean() <= 45


def test_connections_are_homophilous(corpus: Corpus) -> None:
    owner = np.repeat(np.arange(len(corpus.connections_indptr) - 1), np.diff(corpus.connections_indptr))
    linked = (corpus.member_topics[owner] * corpus.member_topics[corpus.connections_indices]).sum(axis=1).mean()
    rng = np.random.default_rng(0)
    a, b = rng.integers(1, corpus.n_members + 1, (2, 20_000))
    random = (corpus.member_topics[a] * corpus.member_topics[b]).sum(axis=1).mean()
    assert linked > random + 0.2


def test_items(corpus: Corpus) -> None:
    items = slice(1, None)
    assert corpus.item_author[items].min() >= 1
    assert corpus.item_author[items].max() <= corpus.n_members
    shares = {t: float(np.mean(corpus.item_type[items] == t)) for t in ItemType}
    assert shares[ItemType.POST] == pytest.approx(0.70, abs=0.02)
    assert shares[ItemType.ARTICLE] == pytest.approx(0.15, abs=0.02)
    assert shares[ItemType.JOB] == pytest.approx(0.15, abs=0.02)
    age = corpus.item_age_hours[items]
    assert age.min() >= 0
    assert age.max() <= MAX_AGE_HOURS
    popularity = corpus.item_popularity[items]
    assert popularity.min() >= 0
    assert (popularity == np.floor(popularity)).all()
    assert popularity.max() > 20 * np.median(popularity)  # heavy tailed
    norms = np.linalg.norm(corpus.item_topics[items], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(corpus.member_topics[1:], axis=1), 1.0, atol=1e-5)
    # Authors post about their own topics.
    own = (corpus.item_topics[items] * corpus.member_topics[corpus.item_author[items]]).sum(axis=1)
    assert own.mean() > 0.5


def test_hashtags(corpus: Corpus) -> None:
    indptr, indices = corpus.item_hashtags_indptr, corpus.item_hashtags_indices
    _assert_csr(indptr, indices, corpus.n_items, 0, corpus.n_hashtags - 1)
    assert indices.dtype == np.int32
    counts = np.diff(indptr)[1:]
    assert counts.min() >= 1
    assert counts.max() <= 4
    assert _sorted_unique_rows(indptr, indices)
    follows_indptr, follows = corpus.member_hashtags_indptr, corpus.member_hashtags_indices
    _assert_csr(follows_indptr, follows, corpus.n_members, 0, corpus.n_hashtags - 1)
    assert follows.dtype == np.int32
    assert _sorted_unique_rows(follows_indptr, follows)
    assert np.diff(follows_indptr)[1:].min() >= 1


def test_author_items_newest_first(corpus: Corpus) -> None:
    indptr, indices = corpus.author_items_indptr, corpus.author_items_indices
    _assert_csr(indptr, indices, corpus.n_members, 1, corpus.n_items)
    np.testing.assert_array_equal(np.sort(indices), np.arange(1, corpus.n_items + 1))
    owner = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    np.testing.assert_array_equal(corpus.item_author[indices], owner)
    age = corpus.item_age_hours[indices]
    same = owner[1:] == owner[:-1]
    assert (age[1:][same] >= age[:-1][same]).all()


def test_the_world_is_data_and_declarations_only(world: tuple[Path, WorldManifest]) -> None:
    out, _ = world
    assert sorted(p.name for p in out.iterdir()) == [
        "engines",
        "features",
        "indexes",
        "models",
        "releases",
        "store",
        "workflows",
        "world.json",
    ]
    (manifest,) = (out / "releases").glob("*.yaml")
    assert sorted(p.name for p in (out / "releases").iterdir()) == sorted(
        [manifest.name, manifest.name.replace(".yaml", ".stats.kll"), manifest.name.replace(".yaml", ".validation.npz")]
    )
    assert sorted(p.name for p in (out / "models").glob("*.signature.yaml")) == [
        "feed_ranker.signature.yaml",
        "feed_ranker_whole.signature.yaml",
        "first_pass.signature.yaml",
        "jobs_first_pass.signature.yaml",
        "jobs_ranker.signature.yaml",
    ]
    assert sorted(p.name for p in (out / "workflows").iterdir()) == ["feed.yaml", "jobs.yaml"]


def test_saved_corpus_loads_back(world: tuple[Path, WorldManifest], tmp_path: Path) -> None:
    _, manifest = world
    generated = generate_corpus(
        WorldSpec(seed=manifest.seed, members=manifest.members, items=manifest.items, hashtags=manifest.hashtags)
    )
    generated.save(tmp_path / "corpus")
    loaded = Corpus.load(tmp_path / "corpus")
    for name, array in _arrays(generated).items():
        np.testing.assert_array_equal(_arrays(loaded)[name], array, err_msg=name)


def test_the_jobs_product_learns_its_latent_model(world: tuple[Path, WorldManifest]) -> None:
    _, manifest = world
    report = manifest.training["jobs"]
    assert report["first_pass_auc"] > 0.75
    assert report["ranker_auc"]["apply"] > 0.75
    assert report["ranker_auc"]["save"] > 0.6


@pytest.mark.parametrize(
    ("index_table", "query_table"), [("job_topics", "member_topics"), ("jobs_vectors", "jobs_seeker_topics")]
)
def test_ann_recall_at_100_on_the_demo_tables_with_member_queries(
    world: tuple[Path, WorldManifest], index_table: str, query_table: str
) -> None:
    """The ANN sources' indexes against exact search, queried as serving queries them (member vectors)."""
    from kvstore.ann import AnnIndex, exact_search, index_dir, read_embedded_table, recall

    out, manifest = world
    version = manifest.tables[index_table].version
    index = AnnIndex.load(index_dir(out / "indexes", index_table, version))
    _, ids, vectors = read_embedded_table(out / "store", index_table, version)
    _, _, members = read_embedded_table(out / "store", query_table)
    queries = members[np.random.default_rng(0).choice(len(members), 200, replace=False)]
    value = recall(index.search(queries, 100), exact_search(ids, vectors, queries, 100, metric="ip"))
    print(f"{index_table}: recall@100 {value:.4f} over 200 member queries")
    assert value >= 0.95
