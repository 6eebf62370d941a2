"""`quasar embeddings` push / list / rollback / gc through click, against Redis, a cluster and the embedded store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from quasar.cli import main
from tests.integration.redis.servers import RedisCluster, RedisServer

IDS = np.arange(1, 301, dtype=np.int64)


def source(tmp_path: Path, name: str, scale: float) -> Path:
    path = tmp_path / f"{name}.npz"
    np.savez(path, ids=IDS, vectors=(scale * np.stack([IDS, -IDS, IDS / 2], axis=1)).astype(np.float32))
    return path


def cli(*args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(main, ["embeddings", *args], catch_exceptions=False)
    assert (result.exit_code == 0) is ok, result.output
    return result.output


def rows(listing: str) -> list[list[str]]:
    """The cells of each body row of `list`'s table."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")] for line in listing.splitlines() if "│" in line
    ]


def current_of(listing: str, table: str) -> list[str]:
    return [row[1] for row in rows(listing) if row[0] == table and row[2] == "*"]


def data_keys(server: RedisServer, prefix: str, version: str) -> int:
    return len(server.command("KEYS", f"{prefix}:{{item:{version}:*"))


@pytest.mark.parametrize("where", ["server", "cluster"])
def test_push_list_rollback_gc(
    tmp_path: Path, prefix: str, where: str, redis_server: RedisServer, redis_cluster: RedisCluster
) -> None:
    servers = [redis_server] if where == "server" else redis_cluster.nodes
    store = f"{servers[0].url}?prefix={prefix}&buckets=8"

    out = cli("push", "--table", "item", "--from", str(source(tmp_path, "a", 1.0)), "--store", store, "--version", "v1")
    assert "item@v1: 300 rows stored, 300 sampled rows equal" in out
    assert "current - → v1" in out
    cli("push", "--table", "item", "--from", str(source(tmp_path, "b", 2.0)), "--store", store, "--version", "v2",
        "--dtype", "float16")  # fmt: skip
    listing = cli("list", "--store", store)
    assert [row[:6] for row in rows(listing)] == [
        ["item", "v1", "", "float32", "3", "300"],
        ["item", "v2", "*", "float16", "3", "300"],
    ]

    assert "current v2 → v1" in cli("rollback", "--store", store, "--table", "item")
    assert "no complete version older" in cli("rollback", "--store", store, "--table", "item", ok=False)
    cli("rollback", "--store", store, "--table", "item", "--to", "v2")
    cli("push", "--table", "item", "--from", str(source(tmp_path, "c", 3.0)), "--store", store, "--version", "v3",
        "--no-switch")  # fmt: skip
    assert current_of(cli("list", "--store", store, "--table", "item"), "item") == ["v2"]

    assert "would delete item@v1 (300 rows)" in cli("gc", "--store", store, "--keep", "1", "--dry-run")
    assert sum(data_keys(s, prefix, "v1") for s in servers) == 300
    out = cli("gc", "--store", store, "--keep", "1")
    assert "deleted item@v1 (300 rows)" in out  # v2 is current, v3 the newest: both kept
    assert "deleted 1 version(s)" in out
    assert sum(data_keys(s, prefix, "v1") for s in servers) == 0
    assert sum(data_keys(s, prefix, "v3") for s in servers) == 300
    assert [row[:3] for row in rows(cli("list", "--store", store))] == [["item", "v2", "*"], ["item", "v3", ""]]


def test_the_embedded_store_and_errors(tmp_path: Path) -> None:
    store = f"embedded:{tmp_path / 'store'}"
    cli("push", "--table", "item", "--from", str(source(tmp_path, "a", 1.0)), "--store", store, "--version", "v1")
    assert current_of(cli("list", "--store", store), "item") == ["v1"]
    assert "already exists" in cli(
        "push", "--table", "item", "--from", str(source(tmp_path, "a", 1.0)), "--store", store, "--version", "v1",
        ok=False,
    )  # fmt: skip
    np.savez(tmp_path / "bad.npz", ids=IDS)
    assert "expected arrays 'ids' and 'vectors'" in cli(
        "push", "--table", "item", "--from", str(tmp_path / "bad.npz"), "--store", store, ok=False
    )
    assert "cannot reach" in cli("list", "--store", "redis://127.0.0.1:1/0", ok=False)
