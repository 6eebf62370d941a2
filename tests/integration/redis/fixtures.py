"""Session fixtures for real Redis, importable by any test module or conftest that needs them.

Each is backed by `servers.shared`, so however many modules import them, a session starts one server and
one cluster, stopped when the last user is done.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.redis.servers import RedisCluster, RedisServer, shared


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with shared("server", lambda: RedisServer(tmp_path_factory.mktemp("redis")).start(), RedisServer.stop) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with shared("cluster", lambda: RedisCluster(tmp_path_factory.mktemp("cluster")).start(), RedisCluster.stop) as c:
        yield c
