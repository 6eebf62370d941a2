"""Real peers for federation tests: one Triton server (PyTriton) and one TF Serving conformance peer per
session, shared with tests/contract (see tests.peers.fixtures), plus helpers to start engines and
gateways whose feed_ranker route points at them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from engines.base import Engine
from engines.config import (
    EnginesConfig,
    RouteConfig,
    TargetConfig,
    TFServingEngineConfig,
    TritonEngineConfig,
)
from gateway.deployment import Deployment
from quasar.demo.build import world_corpus
from quasar.demo.layout import (
    dense_features_pairs,
    hashtag_ids,
    member_feature_rows,
    pool_multi_valued,
    ranker_input,
)
from tests.integration.conftest import Gates, RunningGateway, make_settings, start_gateway
from tests.peers.fixtures import session_tf_models, session_tfserving_peer, session_triton_peer
from tests.peers.tfserving_peer import TFServingPeer
from tests.peers.triton_server import TritonPeer

E = TypeVar("E", bound=Engine)

PARITY_ROWS = 500
RANKER = "feed_ranker"


@pytest.fixture(scope="session")
def triton_peer(request: pytest.FixtureRequest, small_world: Path) -> TritonPeer:
    return session_triton_peer(request.config, small_world)


@pytest.fixture(scope="session")
def tf_models(request: pytest.FixtureRequest, small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_tf_models(request.config, small_world, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tfserving_peer(
    request: pytest.FixtureRequest, small_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> TFServingPeer:
    return session_tfserving_peer(request.config, small_world, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def world_rows(small_world: Path) -> np.ndarray:
    """500 second-pass input rows of real (member, item) pairs, assembled as the rank step does."""
    corpus = world_corpus(small_world)
    rng = np.random.default_rng(500)
    members = rng.integers(1, corpus.n_members + 1, PARITY_ROWS).astype(np.int64)
    items = rng.integers(1, corpus.n_items + 1, PARITY_ROWS).astype(np.int64)
    with np.load(small_world / "models" / "ranker_weights.npz") as weights:
        flat, indptr = hashtag_ids(corpus, items)
        authors = np.asarray(corpus.item_author[items], dtype=np.int64)
        first_pass_score = rng.random(PARITY_ROWS, dtype=np.float32)
        dense = dense_features_pairs(corpus, members, items, first_pass_score, member_feature_rows(corpus, members))
        return ranker_input(
            weights["embedding_member"][members],
            weights["embedding_item"][items],
            weights["embedding_author"][authors],
            pool_multi_valued(weights["embedding_hashtag"][flat], indptr, "mean"),
            dense,
        )


def triton_config(peer: TritonPeer, *models: str, url: str | None = None) -> TritonEngineConfig:
    """The peer's models under their own names; its access token so restricted calls would pass too."""
    return TritonEngineConfig(
        url=url or peer.url_grpc,
        models=list(models or (peer.model,)),
        access_token=peer.access_token,  # pydantic makes the str a SecretStr
        startup_timeout_s=5.0,
    )


def tfserving_config(peer: TFServingPeer, model: str = RANKER, **extra: object) -> TFServingEngineConfig:
    return TFServingEngineConfig(url=peer.url, model_name=model, startup_timeout_s=5.0, **extra)


@asynccontextmanager
async def started(engine: E) -> AsyncIterator[E]:
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def federated_engines(
    world: Path, route: RouteConfig, extra: Mapping[str, TritonEngineConfig | TFServingEngineConfig]
) -> EnginesConfig:
    """The world's default engines (local ONNX ranker, XGBoost first pass) plus `extra`, with the
    feed_ranker route replaced by `route`."""
    default = Deployment(world).engines_config()
    return EnginesConfig(
        engines={**default.engines, **extra},
        routes={**default.routes, RANKER: route},
        candidate_services=default.candidate_services,
    )


def target(engine: str, model: str = RANKER, **extra: object) -> TargetConfig:
    return TargetConfig(engine=engine, model=model, **extra)


@asynccontextmanager
async def gateway_on(world: Path, engines: EnginesConfig) -> AsyncIterator[RunningGateway]:
    """A gateway on port 0 running the built-in workflows with `engines`; drained and stopped on exit."""
    gates = Gates()
    running = await start_gateway(make_settings(world, engines=engines), gates)
    try:
        yield running
    finally:
        await running.channel.close()
        await running.server.drain_and_stop()
