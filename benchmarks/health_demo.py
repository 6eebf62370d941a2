"""The health report a person reads, on the demo world: the trainer's release serving as trained, then a
release whose ranker moved one head as a 50% canary, with the moved ranker also shadowing the stable route.

Usage: python benchmarks/health_demo.py [--world var/world] [--out var/health] [--requests 600]

Serves in process (no gRPC) with ages pinned to the world's build time, flushes the health monitor after
each batch (one drift-history point per batch), then runs `quasar health report` and copies the feed
ranker's distribution plot to docs/health/ for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import yaml
from click.testing import CliRunner

from gateway.app import FeedApp
from gateway.release_changes import LocalReleaseChanges
from gateway.settings import GatewaySettings
from health.monitor import HealthSettings
from health.offline import offline_stats_path
from quasar.cli import main as cli
from quasar.demo import onnx_export
from quasar.demo.build import build_world
from remix.request import FeedRequest

MOVED_HEAD = 1  # comment


def moved_release(world: Path, release: Path, out: Path) -> Path:
    """The trainer's ranker with the comment head's bias raised by 0.5, as a release of its own (its
    trainer's sample and offline stats: those of the original, what it was expected to produce)."""
    weights = dict(np.load(world / "models" / "ranker_weights.npz"))
    weights["head_bias"] = weights["head_bias"] + np.eye(4, dtype=np.float32)[MOVED_HEAD] * 0.5
    embedding_dim = json.loads((world / "world.json").read_text())["embedding_dim"]
    model = out / "moved.onnx"
    onnx_export.save_ranker_onnx(
        onnx_export.build_ranker_onnx(weights, version="moved", embedding_dim=embedding_dim), model
    )
    document = yaml.safe_load(release.read_text())
    with np.load(release.parent / document["validation"]["sample"]) as sample:
        inputs = sample["in.features"]
    np.savez(out / "moved.npz", **{"in.features": inputs, "out.scores": onnx_export.run_onnx(model, inputs)})
    stats = offline_stats_path(release.parent, document["release"])
    shutil.copy(stats, offline_stats_path(out, "feed_ranker-moved"))
    document.update(
        release="feed_ranker-moved",
        signature=str((release.parent / document["signature"]).resolve()),
        artifacts={"local_onnx": {"file": model.name}},
        offline_stats=str(stats.resolve()),
        validation={"sample": "moved.npz"},
    )
    path = out / "feed_ranker-moved.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def serve(world: Path, state: Path, release: Path, moved: Path, requests: int) -> None:
    reference_s = json.loads((world / "world.json").read_text())["training"]["reference_time_s"]
    settings = GatewaySettings(
        world_dir=world,
        metrics_port=None,
        state_dir=state,
        feature_time_s=reference_s,
        health=HealthSettings(sample_rate=1.0, queue_max=8192),
    )
    app = FeedApp(settings)
    await app.start()
    changes = LocalReleaseChanges(app.releases)
    rng = np.random.default_rng(11)
    try:
        await changes.apply(str(release), canary_share=0.0, dry_run=False)
        for phase, canary in (("stable only", None), ("50% canary of the moved ranker", moved)):
            if canary is not None:
                await changes.apply(str(canary), canary_share=0.5, dry_run=False)
            for batch in range(4):
                for member in rng.integers(1, 10_000, requests // 4).tolist():
                    await app.get_feed(FeedRequest("health-demo", member, 50), timeout_s=None)
                assert app.health is not None
                await app.health.flush()
                print(f"{phase}: batch {batch + 1}/4 served and flushed")
    finally:
        await app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("var/world"))
    parser.add_argument("--out", type=Path, default=Path("var/health"))
    parser.add_argument("--requests", type=int, default=600)
    args = parser.parse_args()
    build_world(args.world, progress=True)
    shutil.rmtree(args.out, ignore_errors=True)
    releases = args.out / "releases"
    releases.mkdir(parents=True)
    (release,) = sorted((args.world / "releases").glob("*.yaml"))
    shutil.copy(offline_stats_path(release.parent, release.stem), offline_stats_path(releases, release.stem))
    moved = moved_release(args.world, release, releases)
    state = args.out / "state"
    asyncio.run(serve(args.world, state, release.resolve(), moved.resolve(), args.requests))
    report = args.out / "report"
    result = CliRunner().invoke(
        cli, ["health", "report", "--state-dir", str(state), "--releases-dir", str(releases), "--out", str(report)]
    )
    print(result.output)
    docs = Path("docs/health")
    docs.mkdir(parents=True, exist_ok=True)
    for png in sorted(report.glob("*-feed_ranker-feed_ranker-moved.png")):  # the canary with one head moved
        shutil.copy(png, docs / png.name)
        print(f"copied {png.name} to {docs}")


if __name__ == "__main__":
    main()
