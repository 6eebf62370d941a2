"""A tiny product declared as data (features, signatures), the shipped Models and store fakes, and helpers."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.fake import FakeModels
from features import FeatureRegistry, ModelSignature, load_registry, load_signatures
from kvstore.fake import FakeLookup, InMemoryStore
from remix.budget import Budget
from remix.context import Context
from remix.registry import StepRegistry
from remix.request import FeedRequest
from remix.step import Step
from remix.steps import Candidates, Resources, Services, builtin_step_types
from remix.steps.candidates import ItemType
from remix.steps.remote import RemoteCandidates

DIM = 4
NOW_S = 1000.0  # the monotonic clock budgets read
WALL_S = 1_700_000_000.0  # the wall clock features read
N_MEMBERS, N_ITEMS = 6, 30

FEATURES_YAML = """
entities:
  - {name: member, key: request}
  - {name: item, key: candidate}
  - {name: author, key: item_meta.author_id}
  - {name: hashtag, key: none}
  - {name: everyone, key: none}
views:
  - {name: member_embedding, entity: member, table: member, features: [{name: vector, shape: [4]}]}
  - {name: member_profile, entity: member, table: member_features, features: [{name: activity, default: 0.5}]}
  - {name: member_topics, entity: member, table: member_topics, features: [{name: vector, shape: [2]}]}
  - name: member_graph
    entity: member
    table: member_graph
    dtype: int64
    features: [{name: connections, shape: [3], default: -1}]
  - name: network_feed
    entity: member
    table: network_feed
    dtype: int64
    max_age_s: 3600
    features: [{name: items, shape: [6], default: -1}]
  - name: item_meta
    entity: item
    table: item_meta
    dtype: int64
    features: [{name: type}, {name: author_id}, {name: hashtags, shape: [2], default: -1}]
  - {name: item_stats, entity: item, table: item_stats, features: [{name: popularity}]}
  - {name: item_embedding, entity: item, table: item, features: [{name: vector, shape: [4]}]}
  - {name: job_topics, entity: item, table: job_topics, features: [{name: vector, shape: [2]}]}
  - {name: author_embedding, entity: author, table: author, features: [{name: vector, shape: [4]}]}
  - {name: hashtag_embedding, entity: hashtag, table: hashtag, features: [{name: vector, shape: [4]}]}
  - name: trending
    entity: everyone
    table: trending
    dtype: int64
    features: [{name: items, shape: [5], default: -1}]
derived:
  - {name: item_log_popularity, transform: log1p, inputs: [item_stats.popularity]}
  - {name: author_is_connection, transform: contains, inputs: [member_graph.connections, item_meta.author_id]}
  - {name: hashtags_pooled, transform: pool, inputs: [item_meta.hashtags, hashtag_embedding.vector]}
"""

SIGNATURES_YAML = {
    "first_pass": """
model: first_pass
candidate_entity: item
inputs: [{name: features, features: [item_log_popularity, author_is_connection]}]
outputs: [{name: score, heads: [click]}]
""",
    "feed_ranker": """
model: feed_ranker
candidate_entity: item
inputs:
  - name: features
    features: [member_embedding.vector, item_embedding.vector, author_embedding.vector, hashtags_pooled,
               candidate.first_pass_score, member_profile.activity]
outputs: [{name: scores, heads: [click, share]}]
""",
    "feed_ranker_whole": """
model: feed_ranker_whole
candidate_entity: item
inputs:
  - {name: item_id, dtype: int64, layout: vector, features: [item.id]}
  - {name: dense, features: [candidate.first_pass_score]}
outputs: [{name: scores, heads: [click, share]}]
""",
}


def item_type_of(item: int) -> ItemType:
    return (ItemType.JOB, ItemType.POST, ItemType.ARTICLE)[item % 3]


def author_of(item: int) -> int:
    return (item - 1) % 5 + 1


CONNECTIONS = {1: [2, 3], 2: [1], 3: [1, 4, 5], 4: [3], 5: [3]}  # member 6: no rows anywhere (a cold start)
NETWORK = {1: [4, 2, 9, 2, 7], 2: [1, 5], 3: [30, 29, 28, 27, 26, 25], 4: [], 5: [3]}
TRENDING = [10, 11, 12, 13, 14]


def popularity_of(item: int) -> float:
    return float((item * 13) % 17)


def fill_store(store: InMemoryStore, version: str = "v1") -> None:
    members = np.arange(1, N_MEMBERS, dtype=np.int64)  # member 6 has no row
    items = np.arange(1, N_ITEMS + 1, dtype=np.int64)
    store.put("member", members, np.array([[m, 0, 0, 0] for m in members], np.float32), version=version)
    store.put("member_features", members, (members / 10).reshape(-1, 1).astype(np.float32), version=version)
    store.put("member_topics", members, np.array([[m % 2, 1 - m % 2] for m in members], np.float32), version=version)
    graph = [CONNECTIONS[int(m)] + [-1] * (3 - len(CONNECTIONS[int(m)])) for m in members]
    store.put("member_graph", members, np.array(graph, np.int64), dtype="int64", version=version)
    feeds = [NETWORK[int(m)] + [-1] * (6 - len(NETWORK[int(m)])) for m in members]
    store.put("network_feed", members, np.array(feeds, np.int64), dtype="int64", version=version)
    meta = [[item_type_of(i), author_of(i), i % 5, -1 if i % 2 else (i + 1) % 5] for i in items]
    store.put("item_meta", items, np.array(meta, np.int64), dtype="int64", version=version)
    store.put("item_stats", items, np.array([[popularity_of(int(i))] for i in items], np.float32), version=version)
    store.put("item", items, np.array([[i / 100, 0, 0, 0] for i in items], np.float32), version=version)
    jobs = np.array([i for i in items if item_type_of(int(i)) is ItemType.JOB], np.int64)
    store.put("job_topics", jobs, np.array([[j % 2, 1 - j % 2] for j in jobs], np.float32), version=version)
    store.put("author", members, np.array([[0, m, 0, 0] for m in members], np.float32), version=version)
    hashtags = np.arange(5, dtype=np.int64)
    store.put("hashtag", hashtags, np.array([[0, 0, h + 1, 0] for h in hashtags], np.float32), version=version)
    store.put("trending", np.array([0]), np.array([TRENDING], np.int64), dtype="int64", version=version)


def first_pass_answer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """score = log popularity + 10 x is-connection (so connections' items come first)."""
    x = inputs["features"]
    return {"score": (x[:, 0] + 10 * x[:, 1]).astype(np.float32)}


def ranker_answer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """click = the item embedding's first value (item id / 100), share = 0.5."""
    x = inputs["features"]
    return {"scores": np.column_stack([x[:, DIM], np.full(len(x), 0.5)]).astype(np.float32)}


def whole_answer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    ids = inputs["item_id"]
    return {"scores": np.column_stack([ids / 100, np.full(len(ids), 0.5)]).astype(np.float32)}


Answer = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class Answers:
    """What the fake models answer; tests replace a field to script a model."""

    first_pass: Answer = first_pass_answer
    ranker: Answer = ranker_answer


class CountingStore(InMemoryStore):
    def lookups_of(self, table: str) -> list[FakeLookup]:
        return [call for call in self.lookups if call.table == table]


@dataclass
class FakeRemote:
    """A `RemoteCandidates` answering from a dict; records calls (the real server is an integration test)."""

    answers: dict[int, list[int]]
    name: str = "remote"
    calls: list[dict[str, Any]] | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def retrieve(
        self,
        member_id: int,
        *,
        limit: int,
        context: Mapping[str, str],
        source: str,
        request_id: str,
        timeout_s: float | None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self.calls is None:
            self.calls = []
        self.calls.append({"member_id": member_id, "limit": limit, "source": source, "timeout_s": timeout_s})
        return np.array(self.answers.get(member_id, [])[:limit], np.int64), None


@pytest.fixture(scope="session")
def declared(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureRegistry, dict[str, ModelSignature]]:
    root = tmp_path_factory.mktemp("declared")
    (root / "features").mkdir()
    (root / "features" / "product.yaml").write_text(FEATURES_YAML)
    (root / "models").mkdir()
    for name, text in SIGNATURES_YAML.items():
        (root / "models" / f"{name}.signature.yaml").write_text(text)
    registry = load_registry(root / "features")
    return registry, load_signatures(root / "models", registry)


@pytest.fixture
def answers() -> Answers:
    return Answers()


@pytest.fixture
def models(answers: Answers) -> FakeModels:
    return FakeModels(
        {
            "first_pass": lambda inputs: answers.first_pass(inputs),
            "feed_ranker": lambda inputs: answers.ranker(inputs),
            "feed_ranker_whole": whole_answer,
        }
    )


@pytest.fixture
async def store() -> CountingStore:
    store = CountingStore()
    fill_store(store)
    await store.start()
    return store


@pytest.fixture
def remote() -> FakeRemote:
    return FakeRemote({1: [5, 6, 7], 2: [8]})  # the real client refuses repeats


@pytest.fixture
def services(
    declared: tuple[FeatureRegistry, dict[str, ModelSignature]],
    models: FakeModels,
    store: CountingStore,
    remote: FakeRemote,
    tmp_path: Path,
) -> Services:
    registry, signatures = declared
    remotes: dict[str, RemoteCandidates] = {"remote": remote}
    return Services(
        models=models,
        stores={"default": store},
        registry=registry,
        signatures=signatures,
        clock=time.monotonic,
        wall_clock=lambda: WALL_S,
        resources=Resources(),
        index_root=tmp_path / "indexes",
        candidate_services=remotes,
    )


@pytest.fixture
def registry() -> StepRegistry:
    return StepRegistry(builtin_step_types())


@pytest.fixture
def build(registry: StepRegistry, services: Services) -> Callable[..., Step]:
    """build(type_name, name=None, **params) -> a step, as a workflow loader would make it."""

    def _build(type_name: str, name: str | None = None, **params: Any) -> Step:
        step_type = registry.get(type_name)
        return step_type.build(name or type_name, step_type.params(**params), services)

    return _build


def make_ctx(
    member_id: int = 1, count: int = 10, context: Mapping[str, str] | None = None, *, budget_s: float = 0.5
) -> Context:
    """A context whose budget reads exactly `budget_s` remaining (a frozen clock)."""
    request = FeedRequest(request_id="r1", member_id=member_id, count=count, context=dict(context or {}))
    return Context(request=request, budget=Budget.from_timeout(budget_s, clock=lambda: NOW_S))


async def run_steps(ctx: Context, *steps: Step) -> Context:
    for step in steps:
        await step(ctx)
    return ctx


MEMBER_VIEWS: Sequence[str] = ("member_embedding", "member_profile", "member_topics", "member_graph", "network_feed")
SOURCE = {"model": "first_pass", "item_type": "item_meta.type", "author": "item_meta.author_id"}


def candidates_of(*items: int, scores: Sequence[float] | None = None) -> Candidates:
    """A candidate set of `items` from source "s": authors (id - 1) % 5 + 1, first-pass scores given or
    decreasing."""
    ids = np.array(items, np.int64)
    first_pass = np.asarray(scores if scores is not None else np.linspace(0.9, 0.1, len(ids)), np.float32)
    return Candidates.from_source(
        "s", item_id=ids, item_type=np.ones(len(ids), np.int8), author_id=(ids - 1) % 5 + 1, first_pass_score=first_pass
    )
