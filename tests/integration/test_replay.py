"""Capture requests served in process, then replay them with `quasar replay` against the world's engines."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from prometheus_client import CollectorRegistry

from features import load_registry, load_signatures
from features.registry import ViewFeature
from gateway.app import FeedApp
from gateway.capture import CaptureSettings, CaptureWriter
from gateway.capture_record import read_captures
from quasar.cli import main
from remix.request import FeedRequest
from tests.integration.conftest import make_settings

MEMBERS = (3, 42, 117, 250)
RANKER = "feed_ranker"


@pytest.fixture(scope="module")
async def captures(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every request of MEMBERS, served by the world's feed workflow and captured at rate 1."""
    directory = tmp_path_factory.mktemp("capture")
    app = FeedApp(make_settings(small_world))
    writer = CaptureWriter(CaptureSettings(rate=1.0, dir=directory), CollectorRegistry(), "it")
    await app.start()
    writer.start()
    try:
        for member in MEMBERS:
            answer = await app.get_feed(FeedRequest(f"r{member}", member, 30), timeout_s=5.0)
            assert not answer.context.degraded, answer.context.failures
            writer.offer(answer.context, answer.feed, answer.workflow_version)
        assert await asyncio.to_thread(writer.flush, 30.0)
    finally:
        await asyncio.to_thread(writer.close)
        await app.close()
    return directory


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["replay", *args])


def report(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = orjson.loads(result.stdout)
    return document


def ranker_table(world: Path) -> str:
    """A store table the ranker reads a stored feature of directly."""
    registry = load_registry(world / "features")
    signature = load_signatures(world / "models", registry)[RANKER]
    tables = [f.view.table for tensor in signature.inputs for f in tensor.features if isinstance(f, ViewFeature)]
    assert tables
    return tables[0]


def test_the_captures_hold_the_second_pass_call(captures: Path) -> None:
    read = list(read_captures([captures]))
    assert [c.request_id for c in read] == [f"r{m}" for m in MEMBERS]
    for captured in read:
        ranker = captured.calls[-1]
        assert ranker.model == RANKER
        assert ranker.rows is not None
        assert len(ranker.rows) > 30
        assert all(len(tensor) == len(ranker.rows) for tensor in ranker.inputs.values())
        assert captured.utility_weights
        assert captured.sources
        assert len(captured.feed.item_id) == 30


def test_replaying_the_captured_targets_reports_exactly_zero_difference(captures: Path, small_world: Path) -> None:
    document = report(run(str(captures), "--world", str(small_world), "--json"))
    assert document["replayed"] == len(MEMBERS)
    assert document["skipped"] == []
    assert document["zero_difference"] is True
    assert not [m["metric"] for m in document["metrics"] if m["above_noise"]]
    for request in document["requests"]:
        assert request["model"] == RANKER
        assert request["difference"]["rbo"] == 1.0
        assert request["difference"]["top-50 overlap"] == 1.0
        assert all(v == 0.0 for k, v in request["difference"].items() if k.endswith("|Δ|"))
    explicit = report(
        run(
            str(captures),
            "--world",
            str(small_world),
            "--route",
            f"local_onnx/{RANKER}",
            "--baseline-route",
            f"local_onnx/{RANKER}",
            "--json",
        )
    )
    assert explicit["zero_difference"] is True
    text = run(str(captures), "--world", str(small_world))
    assert text.exit_code == 0, text.output
    assert "zero difference" in text.output


def test_zeroing_a_table_the_ranker_reads_moves_the_ranking(captures: Path, small_world: Path) -> None:
    table = ranker_table(small_world)
    document = report(run(str(captures), "--world", str(small_world), "--perturb", f"zero-table:{table}", "--json"))
    assert document["perturbation"] == f"zero-table:{table}"
    assert document["replayed"] == len(MEMBERS)
    assert document["zero_difference"] is False
    differing = {m["metric"] for m in document["metrics"] if m["above_noise"]}
    assert "rbo" in differing
    (rbo,) = [m for m in document["metrics"] if m["metric"] == "rbo"]
    assert rbo["difference"]["mean"] < 1.0
    assert rbo["noise"]["mean"] == 1.0  # the baseline against itself: deterministic


def test_bad_arguments_are_clear_errors_without_a_traceback(captures: Path, small_world: Path) -> None:
    world = ["--world", str(small_world)]
    unknown_engine = run(str(captures), *world, "--route", f"local_onx/{RANKER}")
    assert unknown_engine.exit_code == 2
    assert "unknown engine 'local_onx' (nearest: local_onnx" in unknown_engine.output
    unknown_model = run(str(captures), *world, "--route", "local_onnx/feed_rank")
    assert unknown_model.exit_code == 2
    assert "engine 'local_onnx' has no model 'feed_rank' (nearest: feed_ranker" in unknown_model.output
    unknown_table = run(str(captures), *world, "--perturb", "zero-table:itemz")
    assert unknown_table.exit_code == 1
    assert "unknown table 'itemz'" in unknown_table.output
    bad_spec = run(str(captures), *world, "--perturb", "shuffle:item")
    assert bad_spec.exit_code == 2
    assert "expected drop-feature:NAME" in bad_spec.output
    missing = run(str(captures / "nothing.jsonl"), *world)
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
    for result in (unknown_engine, unknown_model, unknown_table, bad_spec, missing):
        assert "Traceback" not in result.output


@pytest.fixture(scope="module")
async def release_captures(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Requests served by the world's release through the gateway's own capture (settings `capture`), and a
    second release whose ranker weighs one head differently. (capture dir, release, other release)."""
    import json

    import numpy as np
    import yaml

    from gateway.release_changes import LocalReleaseChanges
    from quasar.demo import onnx_export

    (release,) = sorted((small_world / "releases").glob("*.yaml"))
    directory = tmp_path_factory.mktemp("release-capture")
    other_dir = tmp_path_factory.mktemp("other-release")
    weights = dict(np.load(small_world / "models" / "ranker_weights.npz"))
    weights["head_bias"] = weights["head_bias"] + np.array([0.0, 2.0, 0.0, 0.0], np.float32)  # comment head moves
    embedding_dim = json.loads((small_world / "world.json").read_text())["embedding_dim"]
    model = other_dir / "ranker.onnx"
    onnx_export.save_ranker_onnx(
        onnx_export.build_ranker_onnx(weights, version="other", embedding_dim=embedding_dim), model
    )
    document = yaml.safe_load(release.read_text())
    document.update(
        release="other",
        signature=str((release.parent / document["signature"]).resolve()),
        artifacts={"local_onnx": {"file": str(model)}},
        validation={"warmup_requests": 0},
        offline_stats=None,
    )
    other = other_dir / "other.yaml"
    other.write_text(yaml.safe_dump(document))

    app = FeedApp(make_settings(small_world, capture=CaptureSettings(rate=1.0, dir=directory)))
    await app.start()
    try:
        await LocalReleaseChanges(app.releases).apply(str(release.resolve()), canary_share=0.0, dry_run=False)
        for member in MEMBERS:
            answer = await app.get_feed(FeedRequest(f"r{member}", member, 30), timeout_s=5.0)
            assert answer.context.serving.release
        assert await asyncio.to_thread(app.capture.flush, 30.0)
    finally:
        await app.close()
    return directory, release, other


def test_replay_against_the_release_that_served_reports_zero_and_against_another_its_difference(
    release_captures: tuple[Path, Path, Path], small_world: Path
) -> None:
    directory, release, other = release_captures
    (captured, *_) = read_captures([directory])
    assert captured.release == yaml_release_name(release)
    assert captured.calls[-1].route == f"{RANKER}@{captured.release}"

    same = report(run(str(directory), "--world", str(small_world), "--release", str(release), "--json"))
    assert same["zero_difference"] is True

    moved = report(run(str(directory), "--world", str(small_world), "--release", str(other), "--json"))
    assert moved["zero_difference"] is False
    above = {m["metric"] for m in moved["metrics"] if m["above_noise"]}
    assert any("comment" in metric for metric in above), above
    assert not any("click" in metric for metric in above), above  # only the comment head's scores moved


def yaml_release_name(path: Path) -> str:
    import yaml

    return str(yaml.safe_load(path.read_text())["release"])
