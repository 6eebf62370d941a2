"""A tiny hand-made corpus, the shipped Models and store fakes, and context helpers."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from engines.fake import FakeModels
from kvstore.fake import FakeLookup, InMemoryStore
from remix.budget import Budget
from remix.candidates import ItemType
from remix.context import Context
from remix.corpus import Corpus
from remix.feature_spec import (
    FIRST_PASS_INPUT,
    FIRST_PASS_OUTPUT,
    MEMBER_FEATURES,
    OBJECTIVES,
    RANKER_INPUT,
    RANKER_OUTPUT,
)
from remix.registry import StepRegistry
from remix.request import FeedRequest
from remix.services import Services
from remix.step import Step
from remix.steps import builtin_step_types

DIM = 4  # second-pass embedding width in these tests
NOW_S = 1000.0

# --- the corpus --------------------------------------------------------------------------------------------
# Members 1..6; member 6 has no connections and follows no hashtag. Items 1..30, authored round robin by
# members 1..5; item i is a POST when i % 3 == 1, an ARTICLE when i % 3 == 2, a JOB when i % 3 == 0; its
# age is age_of(i) hours (distinct, not in id order). Hashtags 0..4 (no padding row, as in the real world).
CONNECTIONS = {1: [2, 3], 2: [1], 3: [1, 4, 5], 4: [3], 5: [3], 6: []}
FOLLOWS = {1: [0, 1], 2: [2], 3: [], 4: [3, 4], 5: [0], 6: []}
N_MEMBERS, N_ITEMS, N_HASHTAGS = 6, 30, 5


def item_type_of(item: int) -> ItemType:
    return (ItemType.JOB, ItemType.POST, ItemType.ARTICLE)[item % 3]


def author_of(item: int) -> int:
    return (item - 1) % 5 + 1


def age_of(item: int) -> int:
    return (item * 7) % 31


def hashtags_of(item: int) -> list[int]:
    return sorted({item % 5, (item + 1) % 5}) if item % 2 == 0 else [item % 5]


def _csr(rows: Sequence[Sequence[int]], dtype: type[np.integer[Any]]) -> tuple[npt.NDArray[np.int64], np.ndarray]:
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    flat = [v for r in rows for v in r]
    return indptr, np.array(flat, dtype=dtype)


def _unit(rows: np.ndarray) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)


def make_corpus() -> Corpus:
    items = range(1, N_ITEMS + 1)
    members = range(1, N_MEMBERS + 1)
    item_topics = np.zeros((N_ITEMS + 1, 3))
    for i in items:
        item_topics[i] = [i % 4 == 0, i % 4 == 1, 0.3 + (i % 7) / 10]
    member_topics = np.zeros((N_MEMBERS + 1, 3))
    for m in members:
        member_topics[m] = [m % 2 == 0, m % 2 == 1, 0.1]
    item_hashtags_indptr, item_hashtags = _csr([[]] + [hashtags_of(i) for i in items], np.int32)
    connections_indptr, connections = _csr([[]] + [CONNECTIONS[m] for m in members], np.int64)
    follows_indptr, follows = _csr([[]] + [FOLLOWS[m] for m in members], np.int32)
    authored = [[]] + [sorted((i for i in items if author_of(i) == m), key=age_of) for m in members]
    author_items_indptr, author_items = _csr(authored, np.int64)  # newest first
    return Corpus(
        n_members=N_MEMBERS,
        n_items=N_ITEMS,
        n_hashtags=N_HASHTAGS,
        item_author=np.array([0] + [author_of(i) for i in items], dtype=np.int64),
        item_type=np.array([0] + [item_type_of(i) for i in items], dtype=np.int8),
        item_age_hours=np.array([0] + [age_of(i) for i in items], dtype=np.float32),
        item_popularity=np.array([0] + [(i * 13) % 17 * 10 for i in items], dtype=np.float32),
        item_hashtags_indptr=item_hashtags_indptr,
        item_hashtags_indices=item_hashtags,
        item_topics=np.vstack([np.zeros((1, 3), np.float32), _unit(item_topics[1:])]),
        member_topics=np.vstack([np.zeros((1, 3), np.float32), _unit(member_topics[1:])]),
        member_activity=np.array([0] + [m / 10 for m in members], dtype=np.float32),
        connections_indptr=connections_indptr,
        connections_indices=connections,
        member_hashtags_indptr=follows_indptr,
        member_hashtags_indices=follows,
        author_items_indptr=author_items_indptr,
        author_items_indices=author_items,
    )


# --- fakes ---------------------------------------------------------------------------------------------------


def first_pass_answer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """score = log_popularity - age_days / 10 (feature columns 0 and 1)."""
    x = inputs[FIRST_PASS_INPUT]
    return {FIRST_PASS_OUTPUT: (x[:, 0] - x[:, 1] / 10).astype(np.float32)}


def ranker_answer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-head sigmoid of the item embedding block."""
    item_block = inputs[RANKER_INPUT][:, DIM : 2 * DIM]
    return {RANKER_OUTPUT: (1 / (1 + np.exp(-item_block[:, : len(OBJECTIVES)]))).astype(np.float32)}


Answer = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class Answers:
    """What the fake models answer; tests replace a field to script a model."""

    first_pass: Answer = first_pass_answer
    ranker: Answer = ranker_answer


FIRST_PASS_MODELS = ("first_pass", "fpr_x")


class CountingStore(InMemoryStore):
    """The shipped in-memory store, also recording every `current_versions` call."""

    def __init__(self) -> None:
        super().__init__("memory")
        self.version_calls: list[tuple[str, ...]] = []

    async def current_versions(self, tables: Sequence[str]) -> dict[str, str]:
        self.version_calls.append(tuple(tables))
        return await super().current_versions(tables)

    def put_rows(self, table: str, version: str, rows: Mapping[int, Sequence[float]], *, dim: int) -> None:
        """Adds a version of `table` from id -> vector and makes it current."""
        ids = np.array(list(rows), dtype=np.int64)
        vectors = np.array([rows[i] for i in rows], dtype=np.float32).reshape(len(ids), dim)
        self.put(table, ids, vectors, version=version)

    def lookups_of(self, table: str) -> list[FakeLookup]:
        return [call for call in self.lookups if call.table == table]


def item_vector(item: int) -> list[float]:
    """Item embeddings encode the id, so a fake ranker can tell rows apart."""
    return [item / 100, 0.0, 0.0, 0.0]


def fill_store(store: CountingStore, version: str = "v1") -> None:
    """Every embedding table plus 'member_features', at `version`, made current. Member 6 has no rows."""
    members = {m: [m, 0, 0, 0] for m in range(1, N_MEMBERS)}
    store.put_rows("member", version, members, dim=DIM)
    store.put_rows("author", version, {m: [0, m, 0, 0] for m in range(1, N_MEMBERS + 1)}, dim=DIM)
    items = {i: item_vector(i) for i in range(1, N_ITEMS + 1)}
    store.put_rows("item", version, items, dim=DIM)
    store.put_rows("hashtag", version, {h: [0, 0, h + 1, 0] for h in range(N_HASHTAGS)}, dim=DIM)
    features = {m: [m / 10] * len(MEMBER_FEATURES) for m in range(1, N_MEMBERS)}
    store.put_rows("member_features", version, features, dim=len(MEMBER_FEATURES))


# --- fixtures and helpers ----------------------------------------------------------------------------------


@pytest.fixture
def corpus() -> Corpus:
    return make_corpus()


@pytest.fixture
def answers() -> Answers:
    return Answers()


@pytest.fixture
def models(answers: Answers) -> FakeModels:
    """The shipped Models fake: target 'fake/<model>', version 'fake'; calls recorded in `calls`."""
    scripted: dict[str, Answer] = {name: lambda inputs: answers.first_pass(inputs) for name in FIRST_PASS_MODELS}
    scripted["feed_ranker"] = lambda inputs: answers.ranker(inputs)
    return FakeModels(scripted)


@pytest.fixture
async def store() -> CountingStore:
    store = CountingStore()
    fill_store(store)
    await store.start()
    return store


@pytest.fixture
def services(corpus: Corpus, models: FakeModels, store: CountingStore) -> Services:
    return Services(models=models, store=store, corpus=corpus, clock=time.monotonic)


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
