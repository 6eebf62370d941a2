"""The feature layout shared by serving and training, so the two agree by construction.

Every function here is pure numpy and vectorised over candidates. The serving steps call the
single-member functions (`first_pass_features`, `dense_features`, `ranker_input`); the offline trainer
calls the `*_pairs` variants over (member, item) impression pairs, which run the same code with the
member side broadcast. Changing a layout here changes the models: rebuild the world.

Layouts:
- first pass (XGBoost, input `FIRST_PASS_INPUT`, output "score" = P(click)): `FIRST_PASS_FEATURES`.
- second pass (the dense part of the multi-task ranker, input `RANKER_INPUT`, output `RANKER_OUTPUT` =
  sigmoid probabilities (n, len(OBJECTIVES))): one row is
  `[member | item | author | hashtag_pooled | dense]`, each embedding `embedding_dim` wide, `dense`
  being `DENSE_FEATURES` raw (the model standardises inside its graph).
- embedding tables (`EMBEDDING_TABLES`): 'member' and 'author' are keyed by member id (1..n_members),
  'item' by item id (1..n_items), 'hashtag' by hashtag id (0..n_hashtags-1, no padding row). Hashtags
  are pooled by mean; an item without hashtags pools to zeros.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from quasar.demo.corpus import Corpus
from remix.steps.candidates import ItemType

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

OBJECTIVES: tuple[str, ...] = ("click", "comment", "share", "long_dwell")

FIRST_PASS_FEATURES: tuple[str, ...] = (
    "log_popularity",  # log1p(engagement count)
    "age_days",
    "is_connection",  # 1.0 when the item's author is a connection of the member
    "hashtag_overlap",  # fraction of the item's hashtags the member follows (0 when it has none)
    "type_post",
    "type_article",
    "type_job",
    "topic_similarity",  # dot product of the L2-normalised member and item topic vectors
)

MEMBER_FEATURES: tuple[str, ...] = ("activity", "log_connections", "log_followed_hashtags", "tenure_years")

DENSE_FEATURES: tuple[str, ...] = (*FIRST_PASS_FEATURES, "first_pass_score", *MEMBER_FEATURES)

EMBEDDING_TABLES: tuple[str, ...] = ("member", "item", "author", "hashtag")

RANKER_INPUT = "features"
RANKER_OUTPUT = "scores"
FIRST_PASS_INPUT = "features"
FIRST_PASS_OUTPUT = "score"

TENURE_SPAN_YEARS = 12.0
"""Members join in id order over this span: member 1 is the oldest, member n_members the newest."""

_TYPE_COLUMNS = (ItemType.POST, ItemType.ARTICLE, ItemType.JOB)


def ranker_input_dim(embedding_dim: int) -> int:
    """Width of one ranker input row: four embeddings and the dense features."""
    return 4 * embedding_dim + len(DENSE_FEATURES)


# --- CSR helpers -------------------------------------------------------------------------------------


def _csr_gather(indptr: npt.NDArray[np.int64], indices: npt.NDArray[np.integer], rows: I64) -> tuple[I64, I64]:
    """Rows `rows` of a CSR pair as (flat values int64, indptr of len(rows) + 1), in `rows` order."""
    starts = np.asarray(indptr[rows], dtype=np.int64)
    counts = np.asarray(indptr[rows + 1], dtype=np.int64) - starts
    out_indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=out_indptr[1:])
    total = int(out_indptr[-1])
    positions = np.repeat(starts - out_indptr[:-1], counts) + np.arange(total, dtype=np.int64)
    return np.asarray(indices[positions], dtype=np.int64), out_indptr


def hashtag_ids(corpus: Corpus, item_ids: I64) -> tuple[I64, I64]:
    """The hashtags of each item as CSR: (ids_flat, indptr), row r = ids_flat[indptr[r]:indptr[r+1]]."""
    return _csr_gather(corpus.item_hashtags_indptr, corpus.item_hashtags_indices, np.asarray(item_ids, np.int64))


def _segment_sum(values: npt.NDArray[np.floating], indptr: I64) -> npt.NDArray[np.floating]:
    """Per-row sums of `values` (m, ...) over CSR rows; empty rows sum to zero."""
    if int(indptr[-1]) != len(values) or int(indptr[0]) != 0:
        raise ValueError(f"indptr spans [{int(indptr[0])}, {int(indptr[-1])}), values have {len(values)} rows")
    n = len(indptr) - 1
    nonempty = indptr[1:] > indptr[:-1]
    if len(values) and nonempty.all():
        return np.add.reduceat(values, indptr[:-1], axis=0)
    out = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
    if len(values):
        # reduceat misreads empty segments (it returns the element at the start), so reduce over the
        # non-empty rows only: their starts are strictly increasing and each segment ends where the next
        # non-empty one starts, because empty rows in between own no elements.
        out[nonempty] = np.add.reduceat(values, indptr[:-1][nonempty], axis=0)
    return out


def pool_multi_valued(vectors: F32, indptr: I64, mode: Literal["mean", "sum"]) -> F32:
    """Pool CSR rows of vectors: row r pools vectors[indptr[r]:indptr[r+1]]. Empty rows give zeros.

    `vectors` (m, dim) holds the looked-up vectors of the flattened ids; the result is float32 (n, dim).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    indptr = np.asarray(indptr, dtype=np.int64)
    sums = _segment_sum(vectors, indptr).astype(np.float32, copy=False)
    if mode == "sum":
        return sums
    if mode == "mean":
        counts = np.maximum(np.diff(indptr), 1).astype(np.float32)
        return np.asarray(sums / counts[:, None], dtype=np.float32)
    raise ValueError(f"unknown pooling mode {mode!r}")


# --- first-pass features --------------------------------------------------------------------------------


def is_connection(corpus: Corpus, member_id: int, author_ids: I64) -> npt.NDArray[np.bool_]:
    """Whether each author is a connection of `member_id` (binary search in the member's sorted row)."""
    row = corpus.connections(member_id)
    author_ids = np.asarray(author_ids, dtype=np.int64)
    if len(row) == 0:
        return np.zeros(len(author_ids), dtype=np.bool_)
    pos = np.minimum(np.searchsorted(row, author_ids), len(row) - 1)
    return np.asarray(row[pos] == author_ids, dtype=np.bool_)


def is_connection_pairs(corpus: Corpus, member_ids: I64, author_ids: I64) -> npt.NDArray[np.bool_]:
    """`is_connection` for many (member, author) pairs at once (offline: builds a global edge index)."""
    stride = np.int64(corpus.n_members + 1)
    indptr = np.asarray(corpus.connections_indptr, dtype=np.int64)
    degrees = indptr[1:] - indptr[:-1]
    sources = np.repeat(np.arange(len(degrees), dtype=np.int64), degrees)
    # Rows are ordered by member and sorted within, so the edge keys are globally sorted.
    edges = sources * stride + np.asarray(corpus.connections_indices, dtype=np.int64)
    keys = np.asarray(member_ids, dtype=np.int64) * stride + np.asarray(author_ids, dtype=np.int64)
    if len(edges) == 0:
        return np.zeros(len(keys), dtype=np.bool_)
    pos = np.minimum(np.searchsorted(edges, keys), len(edges) - 1)
    return np.asarray(edges[pos] == keys, dtype=np.bool_)


def _overlap_fraction(flat_followed: npt.NDArray[np.bool_], indptr: I64) -> F32:
    hits = _segment_sum(flat_followed.astype(np.float32), indptr)
    return np.asarray(hits / np.maximum(np.diff(indptr), 1).astype(np.float32), dtype=np.float32)


def _hashtag_overlap(corpus: Corpus, member_id: int, item_ids: I64) -> F32:
    """Fraction of each item's hashtags that `member_id` follows."""
    flat, indptr = hashtag_ids(corpus, item_ids)
    return _overlap_fraction(np.isin(flat, corpus.followed_hashtags(member_id)), indptr)


def _hashtag_overlap_pairs(corpus: Corpus, member_ids: I64, item_ids: I64) -> F32:
    """`_hashtag_overlap` for (member, item) pairs (offline: builds a global follow index)."""
    flat, indptr = hashtag_ids(corpus, item_ids)
    stride = np.int64(max(corpus.n_hashtags, 1))
    follow_indptr = np.asarray(corpus.member_hashtags_indptr, dtype=np.int64)
    follow_counts = follow_indptr[1:] - follow_indptr[:-1]
    owners = np.repeat(np.arange(len(follow_counts), dtype=np.int64), follow_counts)
    edges = np.sort(owners * stride + np.asarray(corpus.member_hashtags_indices, dtype=np.int64))
    keys = np.repeat(member_ids, np.diff(indptr)) * stride + flat
    if len(edges) == 0:
        return _overlap_fraction(np.zeros(len(keys), dtype=np.bool_), indptr)
    pos = np.minimum(np.searchsorted(edges, keys), len(edges) - 1)
    return _overlap_fraction(edges[pos] == keys, indptr)


def _first_pass_matrix(
    corpus: Corpus, item_ids: I64, connected: npt.NDArray[np.bool_], overlap: F32, member_topics: F32
) -> F32:
    """The first-pass feature rows; `member_topics` is (n, topic_dim), possibly a broadcast view."""
    n = len(item_ids)
    out = np.empty((n, len(FIRST_PASS_FEATURES)), dtype=np.float32)
    types = corpus.item_type[item_ids]
    out[:, 0] = np.log1p(corpus.item_popularity[item_ids])
    out[:, 1] = corpus.item_age_hours[item_ids] / np.float32(24.0)
    out[:, 2] = connected
    out[:, 3] = overlap
    for column, item_type in enumerate(_TYPE_COLUMNS, start=4):
        out[:, column] = types == item_type
    # multiply-then-sum (not einsum) so a broadcast member row gives bit-identical results to a full one
    out[:, 7] = (member_topics * corpus.item_topics[item_ids]).sum(axis=1)
    return out


def first_pass_features(corpus: Corpus, member_id: int, item_ids: I64) -> F32:
    """Rows of `FIRST_PASS_FEATURES` for one member's candidates: float32 (n, len(FIRST_PASS_FEATURES))."""
    item_ids = np.asarray(item_ids, dtype=np.int64)
    n = len(item_ids)
    connected = is_connection(corpus, member_id, corpus.item_author[item_ids])
    overlap = _hashtag_overlap(corpus, member_id, item_ids)
    topics = np.broadcast_to(corpus.member_topics[member_id], (n, corpus.member_topics.shape[1]))
    return _first_pass_matrix(corpus, item_ids, connected, overlap, topics)


def first_pass_features_pairs(corpus: Corpus, member_ids: I64, item_ids: I64) -> F32:
    """`first_pass_features` for (member, item) pairs of many members (offline training)."""
    member_ids = np.asarray(member_ids, dtype=np.int64)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    connected = is_connection_pairs(corpus, member_ids, corpus.item_author[item_ids])
    overlap = _hashtag_overlap_pairs(corpus, member_ids, item_ids)
    return _first_pass_matrix(corpus, item_ids, connected, overlap, corpus.member_topics[member_ids])


# --- member and dense features --------------------------------------------------------------------------


def member_feature_rows(corpus: Corpus, member_ids: I64) -> F32:
    """Rows of `MEMBER_FEATURES` for many members: float32 (n, len(MEMBER_FEATURES))."""
    member_ids = np.asarray(member_ids, dtype=np.int64)
    out = np.empty((len(member_ids), len(MEMBER_FEATURES)), dtype=np.float32)
    out[:, 0] = corpus.member_activity[member_ids]
    out[:, 1] = np.log1p(corpus.connections_indptr[member_ids + 1] - corpus.connections_indptr[member_ids])
    out[:, 2] = np.log1p(corpus.member_hashtags_indptr[member_ids + 1] - corpus.member_hashtags_indptr[member_ids])
    out[:, 3] = TENURE_SPAN_YEARS * (corpus.n_members - member_ids + 1) / max(corpus.n_members, 1)
    return out


def member_feature_row(corpus: Corpus, member_id: int) -> F32:
    """The member's 'member_features' row as the offline job writes it: float32 (len(MEMBER_FEATURES),)."""
    return np.asarray(member_feature_rows(corpus, np.array([member_id], dtype=np.int64))[0], dtype=np.float32)


def _dense_matrix(first_pass: F32, first_pass_score: F32, member_features: F32) -> F32:
    n = len(first_pass)
    k = len(FIRST_PASS_FEATURES)
    out = np.empty((n, len(DENSE_FEATURES)), dtype=np.float32)
    out[:, :k] = first_pass
    out[:, k] = np.asarray(first_pass_score, dtype=np.float32).reshape(n)
    out[:, k + 1 :] = member_features
    return out


def dense_features(corpus: Corpus, member_id: int, item_ids: I64, first_pass_score: F32, member_features: F32) -> F32:
    """Rows of `DENSE_FEATURES` for one member's candidates: float32 (n, len(DENSE_FEATURES)).

    `first_pass_score` (n,) is the first-pass model's P(click); `member_features` (len(MEMBER_FEATURES),)
    is the member's 'member_features' row (the caller substitutes its default when the row is missing).
    """
    member_features = np.asarray(member_features, dtype=np.float32).reshape(len(MEMBER_FEATURES))
    return _dense_matrix(first_pass_features(corpus, member_id, item_ids), first_pass_score, member_features)


def dense_features_pairs(
    corpus: Corpus, member_ids: I64, item_ids: I64, first_pass_score: F32, member_features: F32
) -> F32:
    """`dense_features` for (member, item) pairs; `member_features` is (n, len(MEMBER_FEATURES))."""
    return _dense_matrix(first_pass_features_pairs(corpus, member_ids, item_ids), first_pass_score, member_features)


def ranker_input(member_vec: F32, item_vecs: F32, author_vecs: F32, hashtag_pooled: F32, dense: F32) -> F32:
    """One C-contiguous float32 (n, 4*dim + k) matrix: `[member | item | author | hashtag | dense]`.

    `member_vec` is (dim,) and repeated on every row (or already (n, dim) for offline pairs).
    """
    n, dim = item_vecs.shape
    k = dense.shape[1]
    out = np.empty((n, 4 * dim + k), dtype=np.float32)
    out[:, :dim] = member_vec
    out[:, dim : 2 * dim] = item_vecs
    out[:, 2 * dim : 3 * dim] = author_vecs
    out[:, 3 * dim : 4 * dim] = hashtag_pooled
    out[:, 4 * dim :] = dense
    return out
