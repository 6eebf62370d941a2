"""Real Redis for the store's integration tests: one server and one 3-master cluster per session (shared
with the contract suite), a private server a test may kill and restart, and a fresh key prefix per test
so tests never see each other's tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.redis.fixtures import redis_cluster, redis_server
from tests.integration.redis.servers import RedisServer

__all__ = ["own_redis", "prefix", "redis_cluster", "redis_server"]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone, to kill and restart."""
    server = RedisServer(tmp_path / "own-redis")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"
