"""The demo feed as a product: its feature declarations, model signatures, workflow and engines, as the
data `quasar world build` writes. Nothing here is imported by the serving path: the gateway reads the
files this module's values become."""

from __future__ import annotations

import copy
from typing import Any

from quasar.demo.layout import MEMBER_FEATURES, OBJECTIVES

FIRST_PASS_MODEL, RANKER_MODEL, WHOLE_MODEL = "first_pass", "feed_ranker", "feed_ranker_whole"

FIRST_PASS_INPUTS: tuple[str, ...] = (
    "item_log_popularity",
    "item_age_days",
    "author_is_connection",
    "hashtag_overlap",
    "item_type_onehot",
    "topic_similarity",
)
"""The first-pass model's features, in the order of `quasar.demo.layout.FIRST_PASS_FEATURES` (the type
one-hot covers type_post, type_article, type_job)."""

DENSE_INPUTS: tuple[str, ...] = (
    *FIRST_PASS_INPUTS,
    "candidate.first_pass_score",
    *(f"member_profile.{name}" for name in MEMBER_FEATURES),
)
"""The ranker's dense features, in the order of `quasar.demo.layout.DENSE_FEATURES`."""

EMBEDDING_INPUTS: tuple[str, ...] = (
    "member_embedding.vector",
    "item_embedding.vector",
    "author_embedding.vector",
    "hashtags_pooled",
)
MEMBER_VIEWS: tuple[str, ...] = (
    "member_embedding",
    "member_profile",
    "member_topics",
    "member_graph",
    "member_follows",
    "network_feed",
    "hashtag_feed",
)
WEIGHTS = {"click": 1.0, "comment": 0.5, "share": 0.5, "long_dwell": 0.3}
_OWNER = "feed-ranking"


def _vector(name: str, entity: str, table: str, dim: int, description: str, tags: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "entity": entity,
        "table": table,
        "owner": _OWNER,
        "tags": tags,
        "description": description,
        "features": [{"name": "vector", "shape": [dim]}],
    }


def _ids(
    name: str, entity: str, table: str, feature: str, width: int, description: str, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "entity": entity,
        "table": table,
        "dtype": "int64",
        "owner": _OWNER,
        "tags": ["ids", *extra.pop("tags", [])],
        "description": description,
        "features": [{"name": feature, "shape": [width], "default": -1, "description": "padded with -1"}],
        **extra,
    }


def features_document(*, embedding_dim: int, topic_dim: int, widths: dict[str, int]) -> dict[str, Any]:
    """features/feed.yaml. `widths`: id-list widths of connections, follows, item_hashtags, network_feed,
    hashtag_feed, trending."""
    week_s = 7 * 86400.0
    return {
        "entities": [
            {"name": "member", "key": "request", "description": "the member the feed is for"},
            {"name": "item", "key": "candidate", "description": "a post, article or job"},
            {"name": "author", "key": "item_meta.author_id", "description": "the member who wrote an item"},
            {"name": "hashtag", "key": "none", "description": "a hashtag, reached through an item's list"},
            {"name": "everyone", "key": "none", "description": "rows that are the same for every member"},
        ],
        "views": [
            _vector(
                "member_embedding", "member", "member", embedding_dim, "Member tower of the ranker.", ["embedding"]
            ),
            {
                "name": "member_profile",
                "entity": "member",
                "table": "member_features",
                "owner": _OWNER,
                "tags": ["profile", "dense"],
                "description": "Dense member features the offline job computes.",
                "features": [
                    {"name": "activity", "description": "how engaged the member is, 0..1"},
                    {"name": "log_connections", "description": "log1p of the number of connections"},
                    {"name": "log_followed_hashtags", "description": "log1p of the number of followed hashtags"},
                    {"name": "tenure_years", "description": "years since the member joined"},
                ],
            },
            _vector(
                "member_topics", "member", "member_topics", topic_dim, "Member interest topics (L2 unit).", ["topics"]
            ),
            _ids("member_graph", "member", "member_graph", "connections", widths["connections"], "Connections."),
            _ids("member_follows", "member", "member_follows", "hashtags", widths["follows"], "Followed hashtags."),
            _ids(
                "network_feed",
                "member",
                "network_feed",
                "items",
                widths["network_feed"],
                "Recent posts of the member's connections, newest first (offline job).",
                tags=["candidates"],
                max_age_s=30 * 86400.0,
            ),
            _ids(
                "hashtag_feed",
                "member",
                "hashtag_feed",
                "items",
                widths["hashtag_feed"],
                "Recent posts with followed hashtags (offline job).",
                tags=["candidates"],
                max_age_s=30 * 86400.0,
            ),
            {
                "name": "item_meta",
                "entity": "item",
                "table": "item_meta",
                "dtype": "int64",
                "owner": "content-platform",
                "tags": ["metadata"],
                "description": "What an item is: type, author, creation time, hashtags.",
                "features": [
                    {"name": "type", "description": "1 post, 2 article, 3 job"},
                    {"name": "author_id"},
                    {"name": "created_at_s", "description": "creation time, epoch seconds"},
                    {"name": "hashtags", "shape": [widths["item_hashtags"]], "default": -1},
                ],
            },
            {
                "name": "item_stats",
                "entity": "item",
                "table": "item_stats",
                "owner": "content-platform",
                "tags": ["popularity"],
                "max_age_s": week_s,
                "description": "Engagement counters.",
                "features": [{"name": "popularity", "description": "engagement count"}],
            },
            _vector("item_topics", "item", "item_topics", topic_dim, "Item topics (L2 unit).", ["topics"]),
            _vector(
                "job_topics", "item", "job_topics", topic_dim, "Topics of jobs only: the ANN table.", ["topics", "ann"]
            ),
            _vector("item_embedding", "item", "item", embedding_dim, "Item tower of the ranker.", ["embedding"]),
            _vector(
                "author_embedding", "author", "author", embedding_dim, "Author tower of the ranker.", ["embedding"]
            ),
            _vector("hashtag_embedding", "hashtag", "hashtag", embedding_dim, "Hashtag vectors.", ["embedding"]),
            _ids(
                "trending",
                "everyone",
                "trending",
                "items",
                widths["trending"],
                "Trending posts and articles.",
                tags=["candidates"],
            ),
        ],
        "derived": [
            {
                "name": "item_log_popularity",
                "transform": "log1p",
                "inputs": ["item_stats.popularity"],
                "tags": ["popularity"],
            },
            {"name": "item_age_days", "transform": "age", "inputs": ["item_meta.created_at_s"], "unit_s": 86400.0},
            {
                "name": "author_is_connection",
                "transform": "contains",
                "inputs": ["member_graph.connections", "item_meta.author_id"],
                "description": "1 when the item's author is a connection of the member",
            },
            {
                "name": "hashtag_overlap",
                "transform": "overlap",
                "inputs": ["item_meta.hashtags", "member_follows.hashtags"],
                "description": "fraction of the item's hashtags the member follows",
            },
            {"name": "item_type_onehot", "transform": "one_hot", "inputs": ["item_meta.type"], "categories": [1, 2, 3]},
            {"name": "topic_similarity", "transform": "dot", "inputs": ["member_topics.vector", "item_topics.vector"]},
            {
                "name": "hashtags_pooled",
                "transform": "pool",
                "inputs": ["item_meta.hashtags", "hashtag_embedding.vector"],
                "mode": "mean",
                "tags": ["embedding"],
            },
        ],
    }


def signature_documents() -> dict[str, dict[str, Any]]:
    """models/<name>.signature.yaml documents, by model."""
    heads = list(OBJECTIVES)
    return {
        FIRST_PASS_MODEL: {
            "model": FIRST_PASS_MODEL,
            "candidate_entity": "item",
            "description": "XGBoost P(click) of a candidate, shared by every feed source.",
            "inputs": [{"name": "features", "features": list(FIRST_PASS_INPUTS)}],
            "outputs": [{"name": "score", "heads": ["click"]}],
        },
        RANKER_MODEL: {
            "model": RANKER_MODEL,
            "candidate_entity": "item",
            "description": "The multi-task ranker's dense part (two-stage mode: embeddings from the store).",
            "inputs": [{"name": "features", "features": [*EMBEDDING_INPUTS, *DENSE_INPUTS]}],
            "outputs": [{"name": "scores", "heads": heads}],
        },
        WHOLE_MODEL: {
            "model": WHOLE_MODEL,
            "candidate_entity": "item",
            "description": "The whole ranker, embedding tables inside (the fallback when the store fails).",
            "inputs": [
                {"name": "member_id", "dtype": "int64", "layout": "vector", "features": ["member.id"]},
                {"name": "item_id", "dtype": "int64", "layout": "vector", "features": ["item.id"]},
                {"name": "author_id", "dtype": "int64", "layout": "vector", "features": ["item_meta.author_id"]},
                {"name": "hashtag_ids", "dtype": "int64", "features": ["item_meta.hashtags"]},
                {"name": "dense", "features": list(DENSE_INPUTS)},
            ],
            "outputs": [{"name": "scores", "heads": heads}],
        },
    }


def workflow_document() -> dict[str, Any]:
    """workflows/feed.yaml (a fresh document each call: callers may edit it)."""
    return copy.deepcopy(_workflow())


def _workflow() -> dict[str, Any]:
    source = {"model": FIRST_PASS_MODEL, "item_type": "item_meta.type", "author": "item_meta.author_id"}
    branch = {"timeout_s": 0.1, "fail_open": True}
    views = list(MEMBER_VIEWS)
    return {
        "workflow": "feed",
        "version": "2026.12.1",
        "timeout_s": 0.5,
        "description": "Member feed: four first-pass sources, a multi-task second pass, author diversity.",
        "steps": [
            {"type": "rewrite"},
            {
                "type": "features",
                "timeout_s": 0.05,
                "views": views,
                "fallback": {"type": "features.defaults", "views": views},
            },
            {
                "parallel": {
                    "name": "sources",
                    "branches": [
                        {
                            "type": "source.kv_list",
                            "name": "network",
                            "list": "network_feed.items",
                            "limit": 300,
                            "retrieve": 400,
                            **source,
                            **branch,
                        },
                        {
                            "type": "source.ann",
                            "name": "jobs",
                            "query": "member_topics.vector",
                            "table": "job_topics",
                            "limit": 200,
                            "retrieve": 600,
                            **source,
                            **branch,
                        },
                        {
                            "type": "source.static",
                            "name": "trending",
                            "list": "trending.items",
                            "limit": 250,
                            "retrieve": 600,
                            # the list is in memory: without the store it still answers, unscored
                            "on_scoring_failure": "unscored",
                            **source,
                            **branch,
                        },
                        {
                            "type": "source.kv_list",
                            "name": "hashtags",
                            "list": "hashtag_feed.items",
                            "limit": 300,
                            "retrieve": 600,
                            **source,
                            **branch,
                        },
                    ],
                }
            },
            {
                "type": "merge",
                "sources": ["network", "hashtags", "jobs", "trending"],
                "quotas": {"network": 300, "hashtags": 300, "jobs": 200, "trending": 250},
                "max_candidates": 600,
            },
            {
                "type": "filter",
                "rules": [
                    {"name": "low_quality", "feature": "candidate.first_pass_score", "op": "lt", "value": 0.0005}
                ],
            },
            {
                "type": "rank",
                "timeout_s": 0.15,
                "model": RANKER_MODEL,
                "weights": WEIGHTS,
                "candidates": "filtered",
                "fallback": {
                    "type": "rank",
                    "name": "rank_whole_model",
                    "model": WHOLE_MODEL,
                    "weights": WEIGHTS,
                    "candidates": "filtered",
                    "fallback": {"type": "rank.first_pass_order", "candidates": "filtered"},
                },
            },
            {"type": "blend", "max_per_author": 2},
        ],
    }


def engines_document() -> dict[str, Any]:
    return {
        "engines": {
            "local_onnx": {
                "kind": "onnx",
                "models": {RANKER_MODEL: "models/ranker.onnx", WHOLE_MODEL: "models/ranker_whole.onnx"},
            },
            # The first pass scores ~1,700 candidates a request: its trees compiled run 1.2-2x faster than
            # XGBoost's own predictor (engines/compiled_trees.py), with the same scores.
            "local_xgboost": {
                "kind": "xgboost",
                "models": {FIRST_PASS_MODEL: "models/first_pass.ubj"},
                "predictor": "compiled",
            },
        },
        "routes": {
            RANKER_MODEL: {"targets": [{"engine": "local_onnx", "model": RANKER_MODEL}]},
            WHOLE_MODEL: {"targets": [{"engine": "local_onnx", "model": WHOLE_MODEL}]},
            FIRST_PASS_MODEL: {"targets": [{"engine": "local_xgboost", "model": FIRST_PASS_MODEL}]},
        },
    }
