"""A demo world's tables pushed into Redis as an operator would, and feed workflows with relaxed budgets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

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
            report = await push(writer, table, ids, vectors, dtype=entry.dtype, version=entry.version, sample=200)
            pushed[table] = report.version
        return pushed
    finally:
        await writer.close()


def relaxed_feed(directory: Path, world: Path, **variants: dict[str, Any]) -> Path:
    """The world's feed workflow with budgets no loaded test machine misses (features' 50 ms is tight for
    a fresh connection on a busy CI box), plus `variants`: workflow name -> step type -> replacement node
    (None drops the step's fallback instead)."""
    feed = yaml.safe_load((world / "workflows" / "feed.yaml").read_text())
    feed["timeout_s"] = 10.0
    for step in feed["steps"]:
        for node in [step, *step.get("parallel", {}).get("branches", [])]:
            if "timeout_s" in node:
                node["timeout_s"] = 5.0
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "feed.yaml").write_text(yaml.safe_dump(feed, sort_keys=False))
    for name, changes in variants.items():
        spec = copy.deepcopy(feed)
        spec["workflow"] = name
        for step in spec["steps"]:
            if step.get("type") in changes:
                replacement = changes[step["type"]]
                if replacement is None:
                    step.pop("fallback", None)
                else:
                    step.clear()
                    step.update(replacement)
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return directory
