"""A small model declared as data for the health tests: float features (scalars, an embedding vector, a
one-hot), an id tensor health must skip, and two outputs (two heads, and one head returned as (n,))."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import yaml

from engines.shadow_diff import ShadowDiff, compare
from features.declarations import FeaturesDocument
from features.registry import FeatureRegistry
from features.signature import ModelSignature, SignatureDecl, resolve_signature

FEATURES_YAML = """
entities:
  - {name: member, key: request}
  - {name: item, key: candidate}
views:
  - name: member_profile
    entity: member
    table: member_profile
    features:
      - {name: activity}
      - {name: vector, shape: [3]}
  - name: item_stats
    entity: item
    table: item_stats
    features:
      - {name: popularity}
  - name: item_meta
    entity: item
    table: item_meta
    dtype: int64
    features:
      - {name: author_id}
      - {name: kind}
derived:
  - {name: item_kind, transform: one_hot, inputs: [item_meta.kind], categories: [1, 2, 3]}
"""

SIGNATURE_YAML = """
model: ranker
candidate_entity: item
inputs:
  - name: features
    features: [member_profile.activity, member_profile.vector, item_stats.popularity, item_kind]
  - name: authors
    dtype: int64
    layout: vector
    features: [item_meta.author_id]
  - name: first_pass
    layout: vector
    features: [candidate.first_pass_score]
outputs:
  - {name: scores, heads: [click, share]}
  - {name: dwell, heads: [long_dwell]}
"""

FEATURES = (
    "member_profile.activity",
    "member_profile.vector",
    "item_stats.popularity",
    "item_kind",
    "candidate.first_pass_score",
)
HEADS = ("click", "share", "long_dwell")


def signature() -> ModelSignature:
    registry = FeatureRegistry([("features.yaml", FeaturesDocument.model_validate(yaml.safe_load(FEATURES_YAML)))])
    decl = SignatureDecl.model_validate(yaml.safe_load(SIGNATURE_YAML))
    return resolve_signature(decl, registry, "ranker.signature.yaml")


def call(
    rng: np.random.Generator, n: int, *, shift: float = 0.0, feature_shift: float = 0.0, head_shift: float = 0.0
) -> tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]:
    """One model call of `n` rows of N(0, 1) values (item_kind: unknown or one of 3 categories, uniformly);
    `shift` moves member_profile.activity and click, `feature_shift` only the feature, `head_shift` only the
    head."""
    features = np.zeros((n, 8), np.float32)
    features[:, :5] = rng.standard_normal((n, 5))
    features[:, 0] += shift + feature_shift
    kind = rng.integers(0, 4, n)  # 0: a category the one-hot does not know (all zeros)
    features[kind > 0, 4 + kind[kind > 0]] = 1.0
    inputs: dict[str, np.ndarray] = {
        "features": features,
        "authors": rng.integers(0, 1000, n).astype(np.int64),
        "first_pass": rng.standard_normal(n).astype(np.float32),
    }
    scores = rng.standard_normal((n, 2)).astype(np.float32)
    scores[:, 0] += shift + head_shift
    outputs: dict[str, np.ndarray] = {"scores": scores, "dwell": rng.standard_normal(n).astype(np.float32)}
    return inputs, outputs


def shadow_diff(primary: dict[str, np.ndarray], shadow: dict[str, np.ndarray], top_k: int = 10) -> ShadowDiff:
    """What the router hands the monitor: heads compared as `engines.shadow_diff.compare` does."""
    heads = list(primary)
    compared = compare(
        {"scores": np.stack([primary[h] for h in heads], axis=1)},
        {"scores": np.stack([shadow[h] for h in heads], axis=1)},
        {"scores": heads},
        top_k,
    )
    return ShadowDiff("ranker", "v2", "v1", compared.rows, compared.heads)
