"""Session-wide fixtures: one small demo world, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

SMALL_WORLD = {"seed": 11, "members": 800, "items": 8_000, "hashtags": 300}


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small but complete world (corpus, tables, models) shared by integration tests."""
    from quasar.demo.build import build_world

    out = tmp_path_factory.mktemp("world")
    build_world(out, progress=False, **SMALL_WORLD)
    return out
