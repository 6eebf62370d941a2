"""Synthetic impressions and labels, and the numpy AUC every training report uses."""

from __future__ import annotations

import numpy as np
import pytest

from quasar.demo.corpus import Corpus
from quasar.demo.interactions import IMPRESSION_SOURCES, SOURCE_SHARES, generate_interactions, roc_auc
from quasar.demo.layout import OBJECTIVES
from quasar.demo.world import WorldSpec, generate_corpus
from remix.steps.candidates import ItemType

N = 40_000


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate_corpus(WorldSpec(seed=4, members=1_000, items=10_000, hashtags=200))


def _naive_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_roc_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.3).astype(np.float32)
    scores = np.round(rng.random(500) + labels * 0.3, 1)  # rounding makes many ties
    assert roc_auc(labels, scores) == pytest.approx(_naive_auc(labels, scores), abs=1e-12)
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4])) == 0.0
    assert roc_auc(np.array([0, 1, 0, 1]), np.full(4, 0.5)) == 0.5
    assert np.isnan(roc_auc(np.zeros(3), np.arange(3.0)))


def test_deterministic_in_seed(corpus: Corpus) -> None:
    a, b = generate_interactions(corpus, 5_000, seed=1), generate_interactions(corpus, 5_000, seed=1)
    c = generate_interactions(corpus, 5_000, seed=2)
    for name in ("member_id", "item_id", "source", "probability", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert not np.array_equal(a.item_id, c.item_id)


def test_shapes_and_ranges(corpus: Corpus) -> None:
    seen = generate_interactions(corpus, N, seed=3)
    assert len(seen) == N
    assert seen.member_id.min() >= 1
    assert seen.member_id.max() <= corpus.n_members
    assert seen.item_id.min() >= 1
    assert seen.item_id.max() <= corpus.n_items
    assert seen.probability.shape == seen.labels.shape == (N, len(OBJECTIVES))
    assert seen.labels.dtype == np.float32
    assert set(np.unique(seen.labels).tolist()) <= {0.0, 1.0}
    assert ((seen.probability > 0) & (seen.probability < 1)).all()
    rates = seen.labels.mean(axis=0)
    assert 0.15 < rates[0] < 0.5
    assert (rates > 0.02).all()
    shares = np.bincount(seen.source, minlength=len(IMPRESSION_SOURCES)) / N
    # "network" impressions that find no item fall back to "explore"; the others keep their share.
    np.testing.assert_allclose(shares[1:4], SOURCE_SHARES[1:4], atol=0.02)


def test_network_impressions_are_by_connections(corpus: Corpus) -> None:
    seen = generate_interactions(corpus, N, seed=3)
    network = np.flatnonzero(seen.source == IMPRESSION_SOURCES.index("network"))[:500]
    for row in network:
        assert corpus.item_author[seen.item_id[row]] in set(corpus.connections(int(seen.member_id[row])).tolist())
    jobs = seen.source == IMPRESSION_SOURCES.index("jobs")
    assert (corpus.item_type[seen.item_id[jobs]] == ItemType.JOB).all()


def test_labels_carry_a_learnable_signal(corpus: Corpus) -> None:
    seen = generate_interactions(corpus, N, seed=3)
    for j, name in enumerate(OBJECTIVES):
        assert roc_auc(seen.labels[:, j], seen.probability[:, j]) > 0.7, name
    types = corpus.item_type[seen.item_id]
    share = OBJECTIVES.index("share")
    assert (
        seen.probability[types == ItemType.JOB, share].mean() < seen.probability[types == ItemType.POST, share].mean()
    )
    click = OBJECTIVES.index("click")
    assert seen.labels[seen.source == 0, click].mean() > seen.labels[seen.source == 4, click].mean()
