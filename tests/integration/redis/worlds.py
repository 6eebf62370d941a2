"""Push a demo world's tables into Redis at the versions its manifest pins, as an operator would."""

from __future__ import annotations

from pathlib import Path

from kvstore.loader import push, read_table_file
from kvstore.redis import RedisStore
from quasar.demo.build import load_manifest


async def push_world(world: Path, url: str, prefix: str) -> dict[str, str]:
    """Every table of `world`, from its embedded store, at the same version names; returns table -> version."""
    writer = RedisStore(url, prefix=prefix, buckets=8, timeout_s=5.0)
    await writer.start()
    try:
        pushed = {}
        for table, entry in load_manifest(world).tables.items():
            ids, vectors = read_table_file(world / "store" / table / "versions" / entry.version)
            report = await push(writer, table, ids, vectors, version=entry.version, sample=200)
            pushed[table] = report.version
        return pushed
    finally:
        await writer.close()
