"""The synthetic world: members, their graph and followed hashtags, and the items they author.

A latent topic model drives everything. Topics form clusters (communities); a member belongs to one
cluster with a secondary interest, follows hashtags mostly from its cluster, connects mostly inside it
(homophily) and authors items mostly about it. Item popularity is heavy tailed and grows with the
author's activity, the cluster's appeal and the item's age.

`generate_corpus` is a pure function of its `WorldSpec`: the same spec gives byte-identical arrays.
Every step is vectorised over members, items and edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quasar.demo.corpus import Corpus
from remix.steps.candidates import ItemType

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

TYPE_SHARES: dict[ItemType, float] = {ItemType.POST: 0.70, ItemType.ARTICLE: 0.15, ItemType.JOB: 0.15}
MAX_AGE_HOURS = 30 * 24.0


@dataclass(frozen=True)
class WorldSpec:
    """Sizes and shape parameters of a world. Ids: members 1..members, items 1..items, hashtags 0..hashtags-1."""

    seed: int = 7
    members: int = 10_000
    items: int = 100_000
    hashtags: int = 2_000
    topic_dim: int = 16
    mean_connections: float = 40.0
    same_cluster_connection_share: float = 0.75
    mean_age_hours: float = 96.0

    def __post_init__(self) -> None:
        if self.members < 2 or self.items < 1 or self.hashtags < 1:
            raise ValueError(f"world too small: {self.members} members, {self.items} items, {self.hashtags} hashtags")

    @property
    def clusters(self) -> int:
        """Number of topic clusters: at most 40, with ~100+ members and 5+ hashtags in each."""
        return max(1, min(40, self.hashtags // 5, self.members // 100))


def _normalise(x: F64) -> F32:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def _pad_row0(x: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """Prepend the unused row 0 so that an id indexes its row."""
    return np.concatenate([np.zeros((1, *x.shape[1:]), dtype=x.dtype), x])


def _csr_from_pairs(rows: I64, values: I64, n_rows: int, stride: int) -> tuple[I64, I64]:
    """Sorted, de-duplicated CSR (indptr of n_rows + 1, values) from (row, value) pairs."""
    keys = np.unique(rows * np.int64(stride) + values)
    owners = keys // stride
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(owners, minlength=n_rows), out=indptr[1:])
    return indptr, keys % stride


def _group_by(labels: I64, n_groups: int) -> tuple[I64, I64]:
    """(indptr, members) listing the positions holding each label, ascending."""
    order = np.argsort(labels, kind="stable").astype(np.int64)
    indptr = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(np.bincount(labels, minlength=n_groups), out=indptr[1:])
    return indptr, order


def _pick_in_groups(
    rng: np.random.Generator, indptr: I64, members: I64, groups: I64, skew: float = 1.0
) -> tuple[I64, npt.NDArray[np.bool_]]:
    """One member of each requested group (index skewed to the group's head by u**skew); ok=False for empty groups."""
    sizes = indptr[groups + 1] - indptr[groups]
    ok = sizes > 0
    offset = np.floor(rng.random(len(groups)) ** skew * sizes).astype(np.int64)
    picked = members[np.minimum(indptr[groups] + offset, len(members) - 1)]
    return picked, ok


def _connections(
    rng: np.random.Generator,
    spec: WorldSpec,
    activity: F64,
    member_cluster: I64,
    members_indptr: I64,
    members_by_cluster: I64,
) -> tuple[I64, I64]:
    """Symmetric CSR of member ids with `mean_connections` per member on average.

    Edges are drawn in rounds until enough distinct ones exist (small clusters saturate and repeat), then
    the first `target` distinct edges in draw order are kept.
    """
    n_m = spec.members
    target = min(round(n_m * spec.mean_connections / 2), n_m * (n_m - 1) // 2)
    sociability = 0.3 + activity
    p = sociability / sociability.sum()
    stride = np.int64(n_m)
    keys = np.empty(0, dtype=np.int64)
    for _ in range(20):
        missing = target - len(keys)
        if missing <= 0:
            break
        draws = int(missing * 1.1) + 16
        src = rng.choice(n_m, size=draws, p=p).astype(np.int64)
        same = rng.random(draws) < spec.same_cluster_connection_share
        in_cluster, _ = _pick_in_groups(rng, members_indptr, members_by_cluster, member_cluster[src])
        anywhere = rng.choice(n_m, size=draws, p=p).astype(np.int64)
        dst = np.where(same, in_cluster, anywhere)
        keep = src != dst
        low, high = np.minimum(src, dst)[keep], np.maximum(src, dst)[keep]
        keys = np.concatenate([keys, low * stride + high])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]
    keys = keys[:target]
    a, b = keys // stride + 1, keys % stride + 1
    return _csr_from_pairs(np.concatenate([a, b]), np.concatenate([b, a]), n_m + 1, n_m + 1)


def generate_corpus(spec: WorldSpec) -> Corpus:
    """Build the world's corpus from `spec` alone (deterministic)."""
    rng = np.random.default_rng(spec.seed)
    n_m, n_i, n_h, dim, n_c = spec.members, spec.items, spec.hashtags, spec.topic_dim, spec.clusters

    # Topic clusters, their share of members and their appeal (drives popularity).
    centres = _normalise(rng.standard_normal((n_c, dim))).astype(np.float64)
    cluster_share = rng.dirichlet(np.full(n_c, 3.0))
    appeal = rng.normal(0.0, 0.5, n_c)

    # Members: cluster, secondary interest, topic vector, activity.
    member_cluster = rng.choice(n_c, size=n_m, p=cluster_share).astype(np.int64)
    member_second = rng.integers(0, n_c, n_m)
    noise = rng.standard_normal((n_m, dim)) * 0.12
    member_topics = _normalise(centres[member_cluster] + 0.35 * centres[member_second] + noise)
    activity = rng.beta(1.2, 3.0, n_m)

    # Hashtags: every cluster owns at least one; the head of each cluster's list is the popular end.
    hashtag_cluster = rng.permutation(np.arange(n_h, dtype=np.int64) % n_c)
    tags_indptr, tags_by_cluster = _group_by(hashtag_cluster, n_c)

    # Followed hashtags: 2 + Poisson(3 + 8 * activity), 80 % from the member's own cluster.
    n_follows = 2 + rng.poisson(3.0 + 8.0 * activity)
    follower = np.repeat(np.arange(1, n_m + 1, dtype=np.int64), n_follows)
    own = rng.random(len(follower)) < 0.8
    follow_cluster = np.where(own, member_cluster[follower - 1], rng.integers(0, n_c, len(follower)))
    followed, _ = _pick_in_groups(rng, tags_indptr, tags_by_cluster, follow_cluster, skew=2.0)
    member_hashtags_indptr, member_hashtags = _csr_from_pairs(follower, followed, n_m + 1, n_h)

    # Connections: sociable members start more edges; most edges stay inside the cluster (homophily).
    members_indptr, members_by_cluster = _group_by(member_cluster, n_c)
    connections_indptr, connections = _connections(
        rng, spec, activity, member_cluster, members_indptr, members_by_cluster
    )

    # Items: authors skewed to active members; topics mostly the author's cluster.
    author_weight = 0.05 + activity**2
    author = rng.choice(n_m, size=n_i, p=author_weight / author_weight.sum()).astype(np.int64) + 1
    on_topic = rng.random(n_i) < 0.8
    item_cluster = np.where(on_topic, member_cluster[author - 1], member_second[author - 1])
    item_topics = _normalise(centres[item_cluster] + rng.standard_normal((n_i, dim)) * 0.15)
    types = np.array(list(TYPE_SHARES), dtype=np.int8)
    item_type = types[rng.choice(len(types), size=n_i, p=np.array(list(TYPE_SHARES.values())))]

    # 1-4 hashtags per item, 85 % from the item's cluster.
    n_tags = rng.integers(1, 5, n_i)
    tagged = np.repeat(np.arange(1, n_i + 1, dtype=np.int64), n_tags)
    own_tag = rng.random(len(tagged)) < 0.85
    tag_cluster = np.where(own_tag, item_cluster[tagged - 1], rng.integers(0, n_c, len(tagged)))
    tags, _ = _pick_in_groups(rng, tags_indptr, tags_by_cluster, tag_cluster, skew=1.5)
    item_hashtags_indptr, item_hashtags = _csr_from_pairs(tagged, tags, n_i + 1, n_h)

    # Age (hours, exponential, capped at 30 days) and heavy-tailed popularity.
    age_hours = np.minimum(rng.exponential(spec.mean_age_hours, n_i), MAX_AGE_HOURS)
    type_lift = np.zeros(int(types.max()) + 1)
    type_lift[[ItemType.ARTICLE, ItemType.JOB]] = (0.2, -0.3)
    log_mean = (
        0.5
        + 2.5 * activity[author - 1]
        + appeal[item_cluster]
        + 0.4 * np.log1p(age_hours / 24.0)
        + type_lift[item_type]
    )
    popularity = np.floor(np.exp(log_mean + rng.standard_normal(n_i)))

    # Each author's items, newest first (ties by item id).
    item_ids = np.arange(1, n_i + 1, dtype=np.int64)
    order = np.lexsort((item_ids, age_hours, author))
    author_items_indptr = np.zeros(n_m + 2, dtype=np.int64)
    np.cumsum(np.bincount(author, minlength=n_m + 1), out=author_items_indptr[1:])

    return Corpus(
        n_members=n_m,
        n_items=n_i,
        n_hashtags=n_h,
        item_author=np.asarray(_pad_row0(author), dtype=np.int64),
        item_type=np.asarray(_pad_row0(item_type), dtype=np.int8),
        item_age_hours=np.asarray(_pad_row0(age_hours.astype(np.float32)), dtype=np.float32),
        item_popularity=np.asarray(_pad_row0(popularity.astype(np.float32)), dtype=np.float32),
        item_hashtags_indptr=item_hashtags_indptr,
        item_hashtags_indices=item_hashtags.astype(np.int32),
        item_topics=np.asarray(_pad_row0(item_topics), dtype=np.float32),
        member_topics=np.asarray(_pad_row0(member_topics), dtype=np.float32),
        member_activity=np.asarray(_pad_row0(activity.astype(np.float32)), dtype=np.float32),
        connections_indptr=connections_indptr,
        connections_indices=connections,
        member_hashtags_indptr=member_hashtags_indptr,
        member_hashtags_indices=member_hashtags.astype(np.int32),
        author_items_indptr=author_items_indptr,
        author_items_indices=item_ids[order],
    )
