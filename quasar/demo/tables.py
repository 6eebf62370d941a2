"""The demo feed's online tables, computed from its corpus: what a feed team's offline jobs would push.

Every table is (ids, rows); id lists are int64 rows padded with -1. Candidate lists reproduce the
retrieval the demo's sources used to do in process (newest items of connections, newest items of followed
hashtags, trending), now precomputed per member, as a production feed precomputes them.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from quasar.demo.corpus import Corpus
from quasar.demo.layout import member_feature_rows
from remix.steps.candidates import ItemType

I64 = npt.NDArray[np.int64]
Table = tuple[I64, np.ndarray]

NETWORK_PER_AUTHOR = 8
NETWORK_LIST = 400
HASHTAG_PER_TAG = 50
HASHTAG_LIST = 600
TRENDING_LIST = 600
TRENDING_HALF_LIFE_H = 24.0
TRENDING_KEY = 0


def padded(rows: list[I64], width: int) -> npt.NDArray[np.int64]:
    """Lists as one int64 matrix (len(rows), width), each cut to `width` and padded with -1."""
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : min(len(row), width)] = row[:width]
    return out


def _csr_rows(indptr: npt.NDArray[np.int64], indices: np.ndarray, n: int) -> list[I64]:
    return [np.asarray(indices[indptr[r] : indptr[r + 1]], dtype=np.int64) for r in range(n)]


def _width(rows: list[I64]) -> int:
    return max(1, max((len(r) for r in rows), default=1))


def _types(corpus: Corpus, names: tuple[ItemType, ...]) -> npt.NDArray[np.bool_]:
    return np.isin(np.asarray(corpus.item_type), np.array([int(t) for t in names], dtype=np.int8))


def network_lists(corpus: Corpus) -> list[I64]:
    """Per member: the NETWORK_PER_AUTHOR newest posts of each connection, the newest NETWORK_LIST of them."""
    posts = _types(corpus, (ItemType.POST,))
    ages = np.asarray(corpus.item_age_hours)
    lists = []
    for member in range(1, corpus.n_members + 1):
        authors = corpus.connections(member)
        starts, ends = corpus.author_items_indptr[authors], corpus.author_items_indptr[authors + 1]
        chunks = [
            corpus.author_items_indices[s : min(e, s + NETWORK_PER_AUTHOR)] for s, e in zip(starts, ends, strict=True)
        ]
        items = np.concatenate(chunks).astype(np.int64) if chunks else np.empty(0, np.int64)
        items = items[posts[items]]
        lists.append(items[np.argsort(ages[items], kind="stable")][:NETWORK_LIST])
    return lists


def hashtag_lists(corpus: Corpus) -> list[I64]:
    """Per member: posts carrying followed hashtags (HASHTAG_PER_TAG newest per tag), those matching the
    most followed tags first, then the newest; at most HASHTAG_LIST."""
    posts = _types(corpus, (ItemType.POST,))
    ages = np.asarray(corpus.item_age_hours)
    indptr = np.asarray(corpus.item_hashtags_indptr, dtype=np.int64)
    item_of = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    tags = np.asarray(corpus.item_hashtags_indices, dtype=np.int64)
    keep = posts[item_of] & (item_of > 0)
    item_of, tags = item_of[keep], tags[keep]
    order = np.lexsort((ages[item_of], tags))  # by tag, newest first within a tag
    item_of, tags = item_of[order], tags[order]
    tag_starts = np.searchsorted(tags, np.arange(corpus.n_hashtags + 1))
    lists = []
    for member in range(1, corpus.n_members + 1):
        followed = corpus.followed_hashtags(member)
        chunks = [item_of[tag_starts[t] : min(tag_starts[t + 1], tag_starts[t] + HASHTAG_PER_TAG)] for t in followed]
        if not chunks:
            lists.append(np.empty(0, np.int64))
            continue
        matches, counts = np.unique(np.concatenate(chunks), return_counts=True)
        best = np.lexsort((ages[matches], -counts))[:HASHTAG_LIST]
        lists.append(matches[best])
    return lists


def trending_list(corpus: Corpus) -> I64:
    """Posts and articles by log1p(popularity) - ln2 * age / half-life, best first."""
    eligible = np.flatnonzero(_types(corpus, (ItemType.POST, ItemType.ARTICLE))).astype(np.int64)
    eligible = eligible[eligible > 0]
    trend = np.log1p(np.asarray(corpus.item_popularity[eligible], np.float64)) - (
        math.log(2.0) * np.asarray(corpus.item_age_hours[eligible], np.float64) / TRENDING_HALF_LIFE_H
    )
    return eligible[np.argsort(-trend, kind="stable")[:TRENDING_LIST]]


def feed_tables(corpus: Corpus, *, reference_time_s: int) -> dict[str, Table]:
    """Every feature table of the feed product except the learned embeddings (those come from training)."""
    members = np.arange(1, corpus.n_members + 1, dtype=np.int64)
    items = np.arange(1, corpus.n_items + 1, dtype=np.int64)
    connections = _csr_rows(np.asarray(corpus.connections_indptr), corpus.connections_indices, corpus.n_members + 1)[1:]
    follows = _csr_rows(
        np.asarray(corpus.member_hashtags_indptr), corpus.member_hashtags_indices, corpus.n_members + 1
    )[1:]
    item_tags = _csr_rows(np.asarray(corpus.item_hashtags_indptr), corpus.item_hashtags_indices, corpus.n_items + 1)[1:]
    created = reference_time_s - np.round(np.asarray(corpus.item_age_hours[items], np.float64) * 3600.0).astype(
        np.int64
    )
    item_meta = np.column_stack(
        [
            np.asarray(corpus.item_type[items], np.int64),
            np.asarray(corpus.item_author[items], np.int64),
            created,
            padded(item_tags, _width(item_tags)),
        ]
    )
    jobs = np.flatnonzero(np.asarray(corpus.item_type) == ItemType.JOB).astype(np.int64)
    jobs = jobs[jobs > 0]
    network = network_lists(corpus)
    hashtag_feed = hashtag_lists(corpus)
    return {
        "member_features": (members, member_feature_rows(corpus, members)),
        "member_topics": (members, np.asarray(corpus.member_topics[members], np.float32)),
        "member_graph": (members, padded(connections, _width(connections))),
        "member_follows": (members, padded(follows, _width(follows))),
        "network_feed": (members, padded(network, NETWORK_LIST)),
        "hashtag_feed": (members, padded(hashtag_feed, HASHTAG_LIST)),
        "item_meta": (items, item_meta),
        "item_stats": (items, np.asarray(corpus.item_popularity[items], np.float32).reshape(-1, 1)),
        "item_topics": (items, np.asarray(corpus.item_topics[items], np.float32)),
        "job_topics": (jobs, np.asarray(corpus.item_topics[jobs], np.float32)),
        "trending": (np.array([TRENDING_KEY], np.int64), padded([trending_list(corpus)], TRENDING_LIST)),
    }
