"""The built-in ranking steps and the keys they exchange.

`builtin_step_types()` lists every step type a YAML workflow can name: rewrite, features,
features.defaults, source.network, source.jobs, source.trending, source.hashtags, merge, rank,
rank.whole_model, rank.first_pass_order, blend. The gateway answers with FEED.
"""

from remix.registry import StepType
from remix.steps.blend import BLEND, BlendParams
from remix.steps.features import FEATURES, FEATURES_DEFAULTS, FeaturesParams
from remix.steps.keys import (
    EMBEDDINGS_MISSING,
    EXPERIMENT_BUCKET,
    FEED,
    MEMBER_DEFAULTED,
    MEMBER_EMBEDDING,
    MEMBER_FEATURES,
    MERGED,
    QUERY,
    RANKED,
    TABLE_VERSIONS,
    Query,
    source_key,
)
from remix.steps.merge import MERGE, MergeParams
from remix.steps.rank import FIRST_PASS_ORDER, RANK, RankParams
from remix.steps.rank_whole import RANK_WHOLE_MODEL, RankWholeParams
from remix.steps.rewrite import REWRITE, RewriteParams, experiment_bucket
from remix.steps.sources import HASHTAGS, JOBS, NETWORK, TRENDING


def builtin_step_types() -> list[StepType]:  # type: ignore[type-arg]
    """Every built-in step type, in workflow order (a new list each call)."""
    return [
        REWRITE,
        FEATURES,
        FEATURES_DEFAULTS,
        NETWORK,
        JOBS,
        TRENDING,
        HASHTAGS,
        MERGE,
        RANK,
        RANK_WHOLE_MODEL,
        FIRST_PASS_ORDER,
        BLEND,
    ]


__all__ = [
    "EMBEDDINGS_MISSING",
    "EXPERIMENT_BUCKET",
    "FEED",
    "MEMBER_DEFAULTED",
    "MEMBER_EMBEDDING",
    "MEMBER_FEATURES",
    "MERGED",
    "QUERY",
    "RANKED",
    "TABLE_VERSIONS",
    "BlendParams",
    "FeaturesParams",
    "MergeParams",
    "Query",
    "RankParams",
    "RankWholeParams",
    "RewriteParams",
    "builtin_step_types",
    "experiment_bucket",
    "source_key",
]
