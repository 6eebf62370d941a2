"""The demo trainer's release: what a trainer ships beside a model so a gateway can validate, apply and
watch it (`releases/<release>.yaml`, its validation sample and its offline statistics)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from features.signature import ModelSignature
from health.offline import offline_stats_of_calls, offline_stats_path, save_offline_stats

RELEASES_DIR = "releases"
VALIDATION_ROWS = 256


def write_release(
    out_dir: Path,
    *,
    name: str,
    signature: ModelSignature,
    engine: str,
    model_file: Path,
    tables: Mapping[str, str],
    inputs: Mapping[str, npt.NDArray[Any]],
    outputs: Mapping[str, npt.NDArray[Any]],
) -> Path:
    """Write release `name` of `signature.model` into `<out_dir>/releases/`: the manifest and the first rows
    of the held-out `inputs` with the model's `outputs` as the validation sample. The offline sketches come
    from `write_served_stats`, once the deployment can serve. The manifest's path."""
    directory = out_dir / RELEASES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    sample = directory / f"{name}.validation.npz"
    arrays = {f"in.{k}": v[:VALIDATION_ROWS] for k, v in inputs.items()}
    arrays.update({f"out.{k}": v[:VALIDATION_ROWS] for k, v in outputs.items()})
    np.savez(sample, **arrays)  # type: ignore[arg-type]  # numpy's stub types the first kwarg as allow_pickle
    stats = offline_stats_path(directory, name)
    manifest = {
        "release": name,
        "model": signature.model,
        "signature": _relative(Path(signature.source), directory),
        "artifacts": {engine: {"file": _relative(model_file, directory)}},
        "tables": dict(sorted(tables.items())),
        "route": {"targets": [{"engine": engine}]},
        "offline_stats": stats.name,
        "validation": {"sample": sample.name, "tolerance": 1e-4, "warmup_requests": 20, "warmup_budget_s": 0.25},
        "description": "Written by `quasar world build` (the demo trainer) with the model it trained.",
    }
    path = directory / f"{name}.yaml"
    path.write_text(
        "# A release: validate with `quasar deploy validate`, apply with `quasar deploy apply`.\n"
        + yaml.safe_dump(manifest, sort_keys=False, width=120)
    )
    return path


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), start.resolve())


def write_served_stats(
    out_dir: Path, manifest: Path, signature: ModelSignature, members: npt.NDArray[np.int64], now_s: float
) -> int:
    """Sketch what the release's model sees when it serves: the deployment in `out_dir` ranks the feed of
    held-out `members` in process (ages at `now_s`), and every input and output of the model's calls goes
    into the release's offline statistics. Sketching the training impressions instead would compare two
    populations: a feed ranks hundreds of retrieved candidates per member, most of which were never shown,
    so every feature would drift from the first request. The rows sketched."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from gateway.app import FeedApp
    from gateway.settings import GatewaySettings
    from health.monitor import HealthSettings
    from remix.failures import WorkflowError
    from remix.request import FeedRequest

    Call = tuple[dict[str, npt.NDArray[Any]], dict[str, npt.NDArray[Any]]]

    async def collect() -> tuple[list[Call], frozenset[str]]:
        settings = GatewaySettings(
            world_dir=out_dir, metrics_port=None, feature_time_s=now_s, health=HealthSettings(enabled=False)
        )
        app = FeedApp(settings)
        await app.start()
        calls: list[Call] = []
        try:
            for member in members.tolist():
                try:
                    answer = await app.get_feed(FeedRequest("release-stats", int(member), 50), timeout_s=None)
                except WorkflowError:  # a busy machine: a step out of time; the other members are enough
                    continue
                uses = [use for use in answer.context.models if use.model == signature.model]
                calls += [(dict(use.inputs), dict(use.outputs)) for use in uses]
        finally:
            await app.close()
        return calls, app.request_entities

    # A loop of its own on a thread of its own: the build may be called from inside a running loop (tests).
    with ThreadPoolExecutor(1) as thread:
        calls, request_entities = thread.submit(asyncio.run, collect()).result()
    if len(calls) < len(members) // 2:
        raise RuntimeError(
            f"only {len(calls)} calls of {signature.model} while ranking {len(members)} members: no statistics"
        )
    stats = offline_stats_of_calls(signature, calls, request_entities=request_entities)
    save_offline_stats(offline_stats_path(manifest.parent, manifest.stem), [stats])
    return sum(len(next(iter(outputs.values()))) for _, outputs in calls)
