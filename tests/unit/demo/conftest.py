"""One small demo world, built once for the demo tests (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from quasar.demo.build import WorldManifest, build_world

SMALL = {"seed": 5, "members": 600, "items": 6_000, "hashtags": 200}


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, WorldManifest]:
    out = tmp_path_factory.mktemp("demo-world")
    return out, build_world(out, progress=False, **SMALL)
