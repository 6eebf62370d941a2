"""Online health on the real feed: a release serving like its training reads healthy; a release whose
ranker moved one head raises that head's alarm and no other; `quasar health check/report` read it from
the state directory; tables over their maximum age are stale."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from gateway.app import FeedApp
from gateway.release_changes import LocalReleaseChanges
from health.drift import HealthReport
from health.monitor import HealthSettings
from health.offline import offline_stats_path
from quasar.cli import main
from quasar.demo import onnx_export
from remix.request import FeedRequest
from tests.integration.conftest import make_settings

REQUESTS = 300
MOVED_HEAD = "comment"


def _moved_release(world: Path, release: Path, directory: Path) -> Path:
    """The world's ranker with the comment head's bias raised: same features, one head's scores moved. Its
    trainer's offline stats are the original release's (what the ranker was expected to produce)."""
    import json

    weights = dict(np.load(world / "models" / "ranker_weights.npz"))
    weights["head_bias"] = weights["head_bias"] + np.array([0.0, 1.0, 0.0, 0.0], np.float32)
    embedding_dim = json.loads((world / "world.json").read_text())["embedding_dim"]
    model = directory / "moved.onnx"
    onnx_export.save_ranker_onnx(
        onnx_export.build_ranker_onnx(weights, version="moved", embedding_dim=embedding_dim), model
    )
    document = yaml.safe_load(release.read_text())
    original = document["release"]
    with np.load(release.parent / document["validation"]["sample"]) as sample:  # its trainer's sample
        inputs = sample["in.features"]
    np.savez(directory / "moved.npz", **{"in.features": inputs, "out.scores": onnx_export.run_onnx(model, inputs)})
    document.update(
        release="moved",
        signature=str((release.parent / document["signature"]).resolve()),
        artifacts={"local_onnx": {"file": str(model)}},
        offline_stats=str(offline_stats_path(release.parent, original)),
        validation={"sample": str(directory / "moved.npz")},
    )
    shutil.copy(offline_stats_path(release.parent, original), offline_stats_path(directory, "moved"))
    path = directory / "moved.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def _serve(app: FeedApp, manifest: Path) -> HealthReport:
    await LocalReleaseChanges(app.releases).apply(str(manifest), canary_share=0.0, dry_run=False)
    members = np.random.default_rng(3).integers(1, 800, REQUESTS)
    for i, member in enumerate(members.tolist()):
        await app.get_feed(FeedRequest(f"h{i}", member, 20), timeout_s=5.0)
    assert app.health is not None
    return await app.health.flush()


@pytest.fixture(scope="module")
def releases(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    directory = tmp_path_factory.mktemp("releases")
    (release,) = sorted((small_world / "releases").glob("*.yaml"))
    shutil.copy(offline_stats_path(release.parent, release.stem), offline_stats_path(directory, release.stem))
    return release, _moved_release(small_world, release, directory), directory


async def test_health_reads_a_release_like_its_training_healthy_and_one_moved_head_as_that_heads_alarm(
    small_world: Path, releases: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    release, moved, releases_dir = releases
    state = tmp_path / "state"
    settings = make_settings(
        small_world, metrics_port=None, state_dir=state, health=HealthSettings(sample_rate=1.0, queue_max=4096)
    )
    app = FeedApp(settings)
    await app.start()
    try:
        report = await _serve(app, release)
        health = report.get("feed_ranker", release.stem)
        assert health is not None
        assert health.offline
        assert health.healthy, [(d.name, d.psi, d.ks_statistic) for d in health.drifts if d.alarm]
        assert {d.name for d in health.drifts if d.sufficient} >= {"click", MOVED_HEAD, "item_embedding.vector"}
        assert (
            app.metrics.registry.get_sample_value(
                "quasar_model_healthy", {"model": "feed_ranker", "release": release.stem}
            )
            == 1
        )

        report = await _serve(app, moved)
        health = report.get("feed_ranker", "moved")
        assert health is not None
        assert {d.name for d in health.drifts if d.alarm} == {MOVED_HEAD}
        assert (
            app.metrics.registry.get_sample_value(
                "quasar_health_alarm", {"model": "feed_ranker", "release": "moved", "name": MOVED_HEAD, "kind": "head"}
            )
            == 1
        )
    finally:
        await app.close()

    runner = CliRunner()
    check = runner.invoke(main, ["health", "check", "--state-dir", str(state), "--releases-dir", str(releases_dir)])
    assert check.exit_code == 1, check.output
    assert "unhealthy: feed_ranker@moved" in check.output
    assert f"feed_ranker@{release.stem}" not in check.output.split("unhealthy:")[1]

    out = tmp_path / "report"
    drawn = runner.invoke(
        main,
        ["health", "report", "--state-dir", str(state), "--releases-dir", str(releases_dir), "--out", str(out)],
    )
    assert drawn.exit_code == 1, drawn.output
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs, drawn.output
    assert all((out / name).stat().st_size > 1000 for name in pngs)


async def test_tables_older_than_their_maximum_age_are_stale(small_world: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    app = FeedApp(make_settings(small_world, metrics_port=None, state_dir=state, max_table_age_s=1e-3))
    await app.start()
    await app.close()
    registry = app.metrics.registry
    assert registry.get_sample_value("quasar_artifact_stale", {"kind": "table", "name": "item"}) == 1
    age = registry.get_sample_value("quasar_table_age_seconds", {"table": "item"})
    assert age is not None
    assert age > 0
    check = CliRunner().invoke(
        main, ["health", "check", "--state-dir", str(state), "--releases-dir", str(small_world / "releases")]
    )
    assert check.exit_code == 1, check.output
    assert "table item" in check.output


async def test_a_shadow_rankers_differences_reach_the_metrics_and_the_report(
    small_world: Path, releases: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The moved ranker shadows the route in force: per head, only the moved one differs."""
    from gateway.deployment import Deployment

    _release, moved, releases_dir = releases
    engines = Deployment(small_world).engines_config().model_dump(mode="json")
    engines["engines"]["shadow_onnx"] = {"kind": "onnx", "models": {"feed_ranker": str(moved.parent / "moved.onnx")}}
    engines["routes"]["feed_ranker"]["shadow"] = [{"engine": "shadow_onnx", "model": "feed_ranker"}]
    state = tmp_path / "state"
    app = FeedApp(make_settings(small_world, metrics_port=None, state_dir=state, engines=engines))
    await app.start()
    try:
        for member in range(1, 41):
            await app.get_feed(FeedRequest(f"s{member}", member, 20), timeout_s=5.0)
        await app.router.join_shadow()
        assert app.health is not None
        await app.health.flush()
    finally:
        await app.close()
    registry = app.metrics.registry

    def delta(head: str) -> float:
        labels = {"model": "feed_ranker", "target": "shadow_onnx/feed_ranker", "head": head}
        total = registry.get_sample_value("quasar_shadow_score_delta_sum", labels)
        count = registry.get_sample_value("quasar_shadow_score_delta_count", labels)
        assert total is not None
        assert count == 40
        return total / count

    assert delta(MOVED_HEAD) > 0.01
    assert delta("click") == 0.0
    assert delta("share") == 0.0
    lines = (state / "health" / "shadow.jsonl").read_text().splitlines()
    assert len(lines) == 40
    out = tmp_path / "report"
    drawn = CliRunner().invoke(
        main, ["health", "report", "--state-dir", str(state), "--releases-dir", str(releases_dir), "--out", str(out)]
    )
    assert list(out.glob("shadow-feed_ranker-*.png")), drawn.output
