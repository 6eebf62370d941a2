"""The built-in ranking steps and the keys they exchange (the ranking library; `remix` itself is the
generic workflow engine and never imports this package).

`builtin_step_types()` lists every step type a YAML workflow can name: rewrite, features,
features.defaults, source.kv_list, source.static, source.ann, source.grpc, merge, filter, rank,
rank.first_pass_order, blend. The gateway answers with FEED.
"""

from remix.registry import StepType
from remix.steps.blend import BLEND, BlendParams
from remix.steps.candidates import Candidates, ItemType
from remix.steps.features import FEATURES, FEATURES_DEFAULTS, FeaturesParams
from remix.steps.filter import FILTER, FilterParams
from remix.steps.keys import (
    EXPERIMENT_BUCKET,
    FEATURES_MISSING,
    FEED,
    FILTERED,
    MEMBER_DEFAULTED,
    MERGED,
    QUERY,
    RANKED,
    TABLE_VERSIONS,
    UTILITY_WEIGHTS,
    Query,
    member_rows_key,
    source_key,
)
from remix.steps.lifecycle import Resources
from remix.steps.merge import MERGE, MergeParams
from remix.steps.rank import FIRST_PASS_ORDER, RANK, RankParams
from remix.steps.rewrite import REWRITE, RewriteParams, experiment_bucket
from remix.steps.services import Services
from remix.steps.sources import GRPC, KV_LIST, STATIC
from remix.steps.sources.ann import ANN


def builtin_step_types() -> list[StepType]:  # type: ignore[type-arg]
    """Every built-in step type, in workflow order (a new list each call)."""
    return [
        REWRITE,
        FEATURES,
        FEATURES_DEFAULTS,
        KV_LIST,
        STATIC,
        ANN,
        GRPC,
        MERGE,
        FILTER,
        RANK,
        FIRST_PASS_ORDER,
        BLEND,
    ]


__all__ = [
    "EXPERIMENT_BUCKET",
    "FEATURES_MISSING",
    "FEED",
    "FILTERED",
    "MEMBER_DEFAULTED",
    "MERGED",
    "QUERY",
    "RANKED",
    "TABLE_VERSIONS",
    "UTILITY_WEIGHTS",
    "BlendParams",
    "Candidates",
    "FeaturesParams",
    "FilterParams",
    "ItemType",
    "MergeParams",
    "Query",
    "RankParams",
    "Resources",
    "RewriteParams",
    "Services",
    "builtin_step_types",
    "experiment_bucket",
    "member_rows_key",
    "source_key",
]
