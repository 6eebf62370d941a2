"""remix.feature_spec against naive per-row references, on a generated corpus and hand-made edge cases."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from quasar.demo import layout as fs
from quasar.demo.corpus import Corpus
from quasar.demo.world import WorldSpec, generate_corpus
from remix.steps.candidates import ItemType


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate_corpus(WorldSpec(seed=3, members=300, items=3_000, hashtags=100))


def _naive_pool(vectors: np.ndarray, indptr: np.ndarray, mode: str) -> np.ndarray:
    out = np.zeros((len(indptr) - 1, vectors.shape[1]), dtype=np.float64)
    for r in range(len(indptr) - 1):
        rows = vectors[indptr[r] : indptr[r + 1]].astype(np.float64)
        if len(rows):
            out[r] = rows.sum(axis=0) if mode == "sum" else rows.mean(axis=0)
    return out


def _items_for(corpus: Corpus, member: int, n: int = 200, seed: int = 0) -> npt.NDArray[np.int64]:
    """Random items plus every item by the member's connections (so is_connection is often true)."""
    rng = np.random.default_rng(seed)
    friends = corpus.connections(member)
    by_friends = np.flatnonzero(np.isin(corpus.item_author, friends))
    return np.concatenate([rng.integers(1, corpus.n_items + 1, n), by_friends[:100]]).astype(np.int64)


# --- layout constants --------------------------------------------------------------------------------


def test_layouts_are_consistent() -> None:
    assert fs.OBJECTIVES == ("click", "comment", "share", "long_dwell")
    assert fs.EMBEDDING_TABLES == ("member", "item", "author", "hashtag")
    assert fs.MEMBER_FEATURES == ("activity", "log_connections", "log_followed_hashtags", "tenure_years")
    assert (*fs.FIRST_PASS_FEATURES, "first_pass_score", *fs.MEMBER_FEATURES) == fs.DENSE_FEATURES
    assert len(set(fs.DENSE_FEATURES)) == len(fs.DENSE_FEATURES)
    assert fs.ranker_input_dim(16) == 64 + len(fs.DENSE_FEATURES)
    assert (fs.RANKER_INPUT, fs.RANKER_OUTPUT, fs.FIRST_PASS_INPUT, fs.FIRST_PASS_OUTPUT) == (
        "features",
        "scores",
        "features",
        "score",
    )


# --- pooling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["mean", "sum"])
@pytest.mark.parametrize(
    "counts",
    [
        [2, 0, 3, 0, 0, 1],  # empty rows in the middle
        [0, 0, 4, 1],  # leading empty rows
        [3, 1, 0, 0],  # trailing empty rows
        [0, 0, 0],  # all empty
        [1, 1, 1],
        [],  # no rows
    ],
)
def test_pool_multi_valued_matches_a_loop(mode: str, counts: list[int]) -> None:
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    vectors = np.random.default_rng(1).standard_normal((int(indptr[-1]), 5)).astype(np.float32)
    pooled = fs.pool_multi_valued(vectors, indptr, mode)  # type: ignore[arg-type]
    assert pooled.dtype == np.float32
    assert pooled.shape == (len(counts), 5)
    np.testing.assert_allclose(pooled, _naive_pool(vectors, indptr, mode), rtol=1e-6, atol=1e-6)
    assert not pooled[np.asarray(counts, dtype=np.int64) == 0].any()


def test_pool_multi_valued_rejects_bad_input() -> None:
    vectors = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="indptr"):
        fs.pool_multi_valued(vectors, np.array([0, 2], dtype=np.int64), "mean")
    with pytest.raises(ValueError, match="mode"):
        fs.pool_multi_valued(vectors, np.array([0, 3], dtype=np.int64), "max")  # type: ignore[arg-type]


# --- CSR gather and connections -----------------------------------------------------------------------


def test_hashtag_ids_is_a_csr_gather(corpus: Corpus) -> None:
    items = np.array([5, 1, 5, corpus.n_items, 17, 2], dtype=np.int64)
    flat, indptr = fs.hashtag_ids(corpus, items)
    assert flat.dtype == np.int64
    assert indptr.dtype == np.int64
    assert indptr[0] == 0
    assert len(indptr) == len(items) + 1
    for r, item in enumerate(items):
        lo, hi = corpus.item_hashtags_indptr[item], corpus.item_hashtags_indptr[item + 1]
        np.testing.assert_array_equal(flat[indptr[r] : indptr[r + 1]], corpus.item_hashtags_indices[lo:hi])
    empty_flat, empty_indptr = fs.hashtag_ids(corpus, np.empty(0, dtype=np.int64))
    assert len(empty_flat) == 0
    assert empty_indptr.tolist() == [0]


@pytest.mark.parametrize("member", [0, 1, 17, 150, 300])
def test_is_connection_matches_a_set(corpus: Corpus, member: int) -> None:
    authors = np.concatenate([np.arange(0, corpus.n_members + 1), corpus.connections(member)]).astype(np.int64)
    friends = {int(f) for f in corpus.connections(member)}
    expected = np.array([int(a) in friends for a in authors])
    np.testing.assert_array_equal(fs.is_connection(corpus, member, authors), expected)
    members = np.full(len(authors), member, dtype=np.int64)
    np.testing.assert_array_equal(fs.is_connection_pairs(corpus, members, authors), expected)
    if member:
        assert expected.any()


def test_is_connection_pairs_over_many_members(corpus: Corpus) -> None:
    rng = np.random.default_rng(2)
    members = rng.integers(1, corpus.n_members + 1, 2_000)
    authors = np.where(rng.random(2_000) < 0.5, rng.integers(1, corpus.n_members + 1, 2_000), 0)
    for i in range(0, 2_000, 2):  # half the pairs are real edges
        row = corpus.connections(int(members[i]))
        authors[i] = row[i % len(row)]
    expected = np.array([a in set(corpus.connections(int(m)).tolist()) for m, a in zip(members, authors, strict=True)])
    np.testing.assert_array_equal(fs.is_connection_pairs(corpus, members, authors), expected)


# --- features ------------------------------------------------------------------------------------------


def _naive_first_pass(corpus: Corpus, member: int, item: int) -> list[float]:
    tags = corpus.item_hashtags_indices[corpus.item_hashtags_indptr[item] : corpus.item_hashtags_indptr[item + 1]]
    followed = set(corpus.followed_hashtags(member).tolist())
    item_type = int(corpus.item_type[item])
    return [
        float(np.log1p(float(corpus.item_popularity[item]))),
        float(corpus.item_age_hours[item]) / 24.0,
        float(int(corpus.item_author[item]) in set(corpus.connections(member).tolist())),
        sum(int(t) in followed for t in tags) / max(len(tags), 1),
        float(item_type == ItemType.POST),
        float(item_type == ItemType.ARTICLE),
        float(item_type == ItemType.JOB),
        float(np.dot(corpus.member_topics[member].astype(np.float64), corpus.item_topics[item].astype(np.float64))),
    ]


@pytest.mark.parametrize("member", [0, 1, 42, 299])
def test_first_pass_features_match_a_loop(corpus: Corpus, member: int) -> None:
    items = _items_for(corpus, max(member, 1))
    features = fs.first_pass_features(corpus, member, items)
    assert features.dtype == np.float32
    assert features.shape == (len(items), len(fs.FIRST_PASS_FEATURES))
    expected = np.array([_naive_first_pass(corpus, member, int(i)) for i in items])
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    if member:
        assert features[:, fs.FIRST_PASS_FEATURES.index("is_connection")].any()
        assert features[:, fs.FIRST_PASS_FEATURES.index("hashtag_overlap")].any()


def test_pairs_equal_single_member_features_exactly(corpus: Corpus) -> None:
    """Training uses the pair variants, serving the single-member ones: bit-identical rows."""
    members, items, singles = [], [], []
    for member in (1, 42, 299, 300):
        batch = _items_for(corpus, member, n=50, seed=member)
        members.append(np.full(len(batch), member, dtype=np.int64))
        items.append(batch)
        singles.append(fs.first_pass_features(corpus, member, batch))
    member_ids, item_ids = np.concatenate(members), np.concatenate(items)
    np.testing.assert_array_equal(fs.first_pass_features_pairs(corpus, member_ids, item_ids), np.concatenate(singles))

    score = np.linspace(0, 1, len(item_ids), dtype=np.float32)
    rows = fs.member_feature_rows(corpus, member_ids)
    pairs = fs.dense_features_pairs(corpus, member_ids, item_ids, score, rows)
    start = 0
    for member, batch in zip((1, 42, 299, 300), items, strict=True):
        stop = start + len(batch)
        single = fs.dense_features(corpus, member, batch, score[start:stop], fs.member_feature_row(corpus, member))
        np.testing.assert_array_equal(pairs[start:stop], single)
        start = stop


def test_member_feature_row(corpus: Corpus) -> None:
    member = 42
    row = fs.member_feature_row(corpus, member)
    assert row.dtype == np.float32
    assert row.shape == (len(fs.MEMBER_FEATURES),)
    expected = [
        corpus.member_activity[member],
        np.log1p(len(corpus.connections(member))),
        np.log1p(len(corpus.followed_hashtags(member))),
        fs.TENURE_SPAN_YEARS * (corpus.n_members - member + 1) / corpus.n_members,
    ]
    np.testing.assert_allclose(row, expected, rtol=1e-6)
    # Member 1 joined first; tenure decreases with the id.
    tenure = fs.member_feature_rows(corpus, np.arange(1, corpus.n_members + 1))[:, 3]
    assert tenure[0] == pytest.approx(fs.TENURE_SPAN_YEARS)
    assert (np.diff(tenure) < 0).all()


def test_dense_features_layout(corpus: Corpus) -> None:
    member = 7
    items = _items_for(corpus, member, n=30)
    score = np.arange(len(items), dtype=np.float32) / 100
    member_row = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    dense = fs.dense_features(corpus, member, items, score, member_row)
    k = len(fs.FIRST_PASS_FEATURES)
    assert dense.shape == (len(items), len(fs.DENSE_FEATURES))
    assert dense.dtype == np.float32
    np.testing.assert_array_equal(dense[:, :k], fs.first_pass_features(corpus, member, items))
    np.testing.assert_array_equal(dense[:, k], score)
    np.testing.assert_array_equal(dense[:, k + 1 :], np.broadcast_to(member_row, (len(items), 4)))


def test_ranker_input_layout() -> None:
    n, dim = 5, 3
    member = np.full(dim, 1.0, dtype=np.float32)
    item = np.full((n, dim), 2.0, dtype=np.float32)
    author = np.full((n, dim), 3.0, dtype=np.float32)
    hashtag = np.full((n, dim), 4.0, dtype=np.float32)
    dense = np.arange(n * len(fs.DENSE_FEATURES), dtype=np.float32).reshape(n, -1)
    x = fs.ranker_input(member, item, author, hashtag, dense)
    assert x.shape == (n, fs.ranker_input_dim(dim))
    assert x.dtype == np.float32
    assert x.flags.c_contiguous
    for block, value in enumerate((1.0, 2.0, 3.0, 4.0)):
        assert (x[:, block * dim : (block + 1) * dim] == value).all()
    np.testing.assert_array_equal(x[:, 4 * dim :], dense)
