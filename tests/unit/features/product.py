"""A small product declared as data, shared by the feature registry tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURES_YAML = """
entities:
  - {name: member, key: request}
  - {name: item, key: candidate}
  - {name: author, key: item_meta.author_id}
  - {name: hashtag, key: none}
views:
  - name: member_profile
    entity: member
    table: member_profile
    owner: feed-ml
    tags: [profile, dense]
    description: Activity of a member.
    features:
      - {name: activity, default: 0.5}
      - {name: topics, shape: [2]}
  - name: member_graph
    entity: member
    table: member_graph
    dtype: int64
    tags: [graph]
    features:
      - {name: connections, shape: [3], default: -1}
  - name: item_meta
    entity: item
    table: item_meta
    dtype: int64
    owner: content
    tags: [metadata]
    features:
      - {name: author_id}
      - {name: created_at_s}
      - {name: hashtags, shape: [2], default: -1}
  - name: item_stats
    entity: item
    table: item_stats
    features:
      - {name: popularity}
      - {name: topics, shape: [2]}
  - name: author_embedding
    entity: author
    table: author_embedding
    tags: [embedding]
    features: [{name: vector, shape: [2]}]
  - name: hashtag_embedding
    entity: hashtag
    table: hashtag_embedding
    tags: [embedding]
    features: [{name: vector, shape: [2]}]
derived:
  - {name: item_log_popularity, transform: log1p, inputs: [item_stats.popularity], tags: [popularity]}
  - {name: item_age_days, transform: age, inputs: [item_meta.created_at_s]}
  - {name: topic_similarity, transform: dot, inputs: [member_profile.topics, item_stats.topics]}
  - {name: author_is_connection, transform: contains, inputs: [member_graph.connections, item_meta.author_id]}
  - {name: hashtags_pooled, transform: pool, inputs: [item_meta.hashtags, hashtag_embedding.vector]}
"""

SIGNATURE_YAML = """
model: ranker
candidate_entity: item
inputs:
  - name: features
    features: [member_profile.activity, item_log_popularity, item_age_days, topic_similarity, author_is_connection,
               author_embedding.vector, hashtags_pooled, candidate.first_pass_score]
outputs:
  - {name: scores, heads: [click, share]}
"""

NOW_S = 1_000_000.0

TABLES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "member_profile": (np.array([1, 2]), np.array([[0.9, 1.0, 0.0], [0.1, 0.0, 1.0]], np.float32)),
    "member_graph": (np.array([1, 2]), np.array([[10, 11, -1], [-1, -1, -1]], np.int64)),
    "item_meta": (
        np.array([100, 101, 102]),
        np.array([[10, NOW_S - 86400, 5, 6], [12, NOW_S - 2 * 86400, 6, -1], [11, NOW_S, -1, -1]], np.int64),
    ),
    "item_stats": (np.array([100, 101, 102]), np.array([[0.0, 1, 0], [np.e - 1, 0, 1], [3, 1, 1]], np.float32)),
    "author_embedding": (np.array([10, 11]), np.array([[1, 2], [3, 4]], np.float32)),
    "hashtag_embedding": (np.array([5, 6]), np.array([[1, 0], [0, 1]], np.float32)),
}


def write_product(root: Path, features_yaml: str = FEATURES_YAML, signature_yaml: str = SIGNATURE_YAML) -> Path:
    (root / "features").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "features" / "product.yaml").write_text(features_yaml)
    (root / "models" / "ranker.signature.yaml").write_text(signature_yaml)
    return root
