"""Session-wide fixtures: one small demo world, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.backlog import enable_shedding_experiment

# As the gateway's entry points do, before any test module imports grpc (core reads it once, at import):
# in-process gateways refuse calls past core's pending bound with RESOURCE_EXHAUSTED (gateway.backlog).
enable_shedding_experiment(os.environ)

SMALL_WORLD = {"seed": 11, "members": 800, "items": 8_000, "hashtags": 300}


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small but complete world (corpus, tables, models) shared by integration tests."""
    from quasar.demo.build import build_world

    out = tmp_path_factory.mktemp("world")
    build_world(out, progress=False, **SMALL_WORLD)
    return out
