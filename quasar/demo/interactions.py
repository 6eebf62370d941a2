"""Synthetic impressions and their engagement labels, and the AUC used to judge models against them.

Impressions are drawn from a mixture that looks like serving traffic (items by connections,
topic-similar items, popular items, jobs, a little exploration). Each (member, item) pair gets a
ground-truth probability per objective from a hidden function of topic affinity, connection, hashtag
overlap, popularity, age, type, member activity and latent item/author quality that no feature
carries; the labels are Bernoulli draws from those probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quasar.demo.corpus import Corpus
from quasar.demo.layout import FIRST_PASS_FEATURES, OBJECTIVES, first_pass_features_pairs
from remix.steps.candidates import ItemType

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

IMPRESSION_SOURCES: tuple[str, ...] = ("network", "topic", "popular", "jobs", "explore")
SOURCE_SHARES = np.array([0.35, 0.25, 0.20, 0.10, 0.10])

# Hidden engagement model, one column per objective (click, comment, share, long_dwell).
_BIAS = np.array([-2.6, -3.9, -4.2, -3.0])
_WEIGHTS = {
    "topic_similarity": np.array([3.0, 2.5, 2.0, 2.5]),
    "is_connection": np.array([0.9, 1.4, 0.7, 0.3]),
    "hashtag_overlap": np.array([0.6, 0.4, 0.5, 0.3]),
    "log_popularity": np.array([0.25, 0.15, 0.35, 0.10]),
    "age_days": np.array([-0.10, -0.12, -0.15, -0.05]),
}
_LOG_POPULARITY_CENTRE = 2.0
_ACTIVITY = np.array([1.0, 1.2, 0.8, 0.8])
_TYPE_LIFT = {  # jobs get clicks and reads but few comments or shares; articles are read and shared
    ItemType.POST: np.zeros(4),
    ItemType.ARTICLE: np.array([0.2, 0.3, 0.8, 1.5]),
    ItemType.JOB: np.array([0.6, -1.5, -2.0, 0.5]),
}
_ITEM_QUALITY = np.array([1.0, 0.8, 1.0, 0.8])
_AUTHOR_QUALITY = np.array([0.6, 0.6, 0.6, 0.6])
_MEMBER_BIAS = np.array([0.5, 0.5, 0.5, 0.5])


@dataclass(frozen=True)
class Interactions:
    """n impressions: who saw what, where it came from, the true probabilities and the drawn labels."""

    member_id: I64
    item_id: I64
    source: npt.NDArray[np.int8]  # index into IMPRESSION_SOURCES
    probability: F32  # (n, len(OBJECTIVES)) ground truth
    labels: F32  # (n, len(OBJECTIVES)) 0/1

    def __len__(self) -> int:
        return len(self.member_id)


def _best_by_topic(rng: np.random.Generator, corpus: Corpus, members: I64, pool: I64, draws: int) -> I64:
    """For each member, the most topic-similar of `draws` random items from `pool`."""
    picks = pool[rng.integers(0, len(pool), (len(members), draws))]
    sims = np.einsum("nd,nkd->nk", corpus.member_topics[members], corpus.item_topics[picks])
    return np.asarray(picks[np.arange(len(members)), np.argmax(sims, axis=1)], dtype=np.int64)


def _network_items(rng: np.random.Generator, corpus: Corpus, members: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
    """A recent item by a random connection of each member; ok=False where there is none."""
    indptr = np.asarray(corpus.connections_indptr)
    degree = indptr[members + 1] - indptr[members]
    has_connection = degree > 0
    pick = indptr[members] + np.floor(rng.random(len(members)) * degree).astype(np.int64)
    friend = np.where(
        has_connection, corpus.connections_indices[np.minimum(pick, len(corpus.connections_indices) - 1)], 0
    )
    items_indptr = np.asarray(corpus.author_items_indptr)
    count = items_indptr[friend + 1] - items_indptr[friend]
    ok = has_connection & (count > 0)
    offset = np.floor(rng.random(len(members)) ** 1.5 * count).astype(np.int64)  # skewed to the newest
    position = np.minimum(items_indptr[friend] + offset, len(corpus.author_items_indices) - 1)
    return np.asarray(corpus.author_items_indices[position], dtype=np.int64), ok


def sample_impressions(corpus: Corpus, n: int, *, seed: int) -> tuple[I64, I64, npt.NDArray[np.int8]]:
    """(member_id, item_id, source) for n impressions; members weighted by activity."""
    rng = np.random.default_rng([seed, 1])
    weight = 0.2 + np.asarray(corpus.member_activity[1:], dtype=np.float64)
    members = rng.choice(corpus.n_members, size=n, p=weight / weight.sum()).astype(np.int64) + 1
    source = rng.choice(len(IMPRESSION_SOURCES), size=n, p=SOURCE_SHARES).astype(np.int8)
    items = rng.integers(1, corpus.n_items + 1, n).astype(np.int64)  # "explore", and the fallback

    network = np.flatnonzero(source == 0)
    found, ok = _network_items(rng, corpus, members[network])
    items[network[ok]] = found[ok]
    source[network[~ok]] = IMPRESSION_SOURCES.index("explore")

    all_items = np.arange(1, corpus.n_items + 1, dtype=np.int64)
    topic = np.flatnonzero(source == 1)
    items[topic] = _best_by_topic(rng, corpus, members[topic], all_items, draws=10)

    popular = np.flatnonzero(source == 2)
    popularity = np.asarray(corpus.item_popularity[1:], dtype=np.float64) + 1.0
    items[popular] = rng.choice(all_items, size=len(popular), p=popularity / popularity.sum())

    jobs = np.flatnonzero(source == 3)
    job_items = all_items[np.asarray(corpus.item_type[1:]) == ItemType.JOB]
    if len(job_items):
        items[jobs] = _best_by_topic(rng, corpus, members[jobs], job_items, draws=4)
    else:
        source[jobs] = IMPRESSION_SOURCES.index("explore")
    return members, items, source


def engagement_probability(corpus: Corpus, member_ids: I64, item_ids: I64, *, seed: int) -> F32:
    """The hidden ground truth: P(objective) for each pair, (n, len(OBJECTIVES)) float32."""
    rng = np.random.default_rng([seed, 2])
    item_quality = rng.normal(0.0, 0.6, corpus.n_items + 1)
    author_quality = rng.normal(0.0, 0.5, corpus.n_members + 1)
    member_bias = rng.normal(0.0, 0.4, corpus.n_members + 1)

    features = first_pass_features_pairs(corpus, member_ids, item_ids).astype(np.float64)
    column = {name: features[:, i] for i, name in enumerate(FIRST_PASS_FEATURES)}
    column["log_popularity"] = column["log_popularity"] - _LOG_POPULARITY_CENTRE
    logits = np.broadcast_to(_BIAS, (len(member_ids), len(OBJECTIVES))).copy()
    for name, weight in _WEIGHTS.items():
        logits += column[name][:, None] * weight
    logits += np.asarray(corpus.member_activity[member_ids], dtype=np.float64)[:, None] * _ACTIVITY
    types = np.asarray(corpus.item_type[item_ids])
    for item_type, lift in _TYPE_LIFT.items():
        logits += (types == item_type)[:, None] * lift
    logits += item_quality[item_ids][:, None] * _ITEM_QUALITY
    logits += author_quality[corpus.item_author[item_ids]][:, None] * _AUTHOR_QUALITY
    logits += member_bias[member_ids][:, None] * _MEMBER_BIAS
    return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float32)


def generate_interactions(corpus: Corpus, n: int, *, seed: int) -> Interactions:
    """n impressions with ground-truth probabilities and Bernoulli labels (deterministic in seed)."""
    members, items, source = sample_impressions(corpus, n, seed=seed)
    probability = engagement_probability(corpus, members, items, seed=seed)
    rng = np.random.default_rng([seed, 3])
    labels = (rng.random(probability.shape) < probability).astype(np.float32)
    return Interactions(member_id=members, item_id=items, source=source, probability=probability, labels=labels)


def roc_auc(labels: npt.NDArray[np.floating], scores: npt.NDArray[np.floating]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN when a class is absent."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    _, inverse, counts = np.unique(scores[order], return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each tie group
    ranks = np.empty(len(scores))
    ranks[order] = average_rank[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
