"""Releases on a real gateway: validated, applied under load with no failed request and no answer mixing
two releases, canaried to a sticky share of members, rolled back, kept across a restart; a table version
pushed and pinned by a release serves without a restart."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml

from gateway.app import FeedApp
from gateway.release_manifest import load_release
from kvstore.embedded import current_version, write_version
from quasar.v1 import admin_pb2, admin_pb2_grpc, feed_pb2, feed_pb2_grpc
from tests.integration.conftest import Gates, make_settings, start_gateway

TOKEN = "release-admin-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
PUSHED_TABLE = "item"  # the item embeddings the ranker reads
PUSHED_VERSION = "pushed-by-r2"


@dataclass(frozen=True)
class ReleaseWorld:
    root: Path
    r1: Path  # the release the world build wrote
    r2: Path  # r1 with PUSHED_TABLE at PUSHED_VERSION (a new, not current, version of other values)


def _derive(base: Path, name: str, **changes: object) -> Path:
    document = yaml.safe_load(base.read_text())
    document.update(release=name, **changes)
    path = base.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def release_world(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> ReleaseWorld:
    """A copy of the small world (these tests push table versions into its store)."""
    root = tmp_path_factory.mktemp("release-world") / "world"
    shutil.copytree(small_world, root)
    (r1,) = sorted((root / "releases").glob("*.yaml"))
    store = root / "store"
    version_dir = store / PUSHED_TABLE / "versions" / str(current_version(store, PUSHED_TABLE))
    ids = np.load(version_dir / "ids.npy")
    vectors = np.load(version_dir / "vectors.npy")
    rng = np.random.default_rng(5)
    write_version(store, PUSHED_TABLE, ids, rng.normal(size=vectors.shape), version=PUSHED_VERSION)
    topics = store / "job_topics" / "versions" / str(current_version(store, "job_topics"))
    write_version(store, "job_topics", np.load(topics / "ids.npy"), np.load(topics / "vectors.npy"), version="no-index")
    tables = yaml.safe_load(r1.read_text())["tables"]
    r2 = _derive(r1, "feed_ranker-r2", tables={**tables, PUSHED_TABLE: PUSHED_VERSION})
    return ReleaseWorld(root, r1, r2)


async def _validate(world: ReleaseWorld, manifest: Path) -> dict[str, tuple[bool, str]]:
    app = FeedApp(make_settings(world.root, metrics_port=None))
    await app.start()
    try:
        release = load_release(manifest)
        await app.releases.load_artifacts(release)
        report = await app.releases.validate(release)
    finally:
        await app.close()
    return {check.name: (check.ok, check.detail) for check in report.checks}


async def test_the_trainers_release_validates(release_world: ReleaseWorld) -> None:
    checks = await _validate(release_world, release_world.r1)
    assert all(ok for ok, _ in checks.values()), checks
    assert {"signature", "features online", "engine local_onnx", "scores on local_onnx", "warm-up"} <= set(checks)
    assert "max abs diff" in checks["scores on local_onnx"][1]


async def test_validation_refuses_a_missing_table_version(release_world: ReleaseWorld) -> None:
    tables = yaml.safe_load(release_world.r1.read_text())["tables"]
    broken = _derive(release_world.r1, "missing-table", tables={**tables, "member": "never-pushed"})
    checks = await _validate(release_world, broken)
    ok, detail = checks["table member"]
    assert not ok
    assert "never-pushed" in detail
    assert all(ok for name, (ok, _) in checks.items() if name.startswith("table ") and name != "table member")


async def test_validation_refuses_a_pinned_table_whose_index_was_not_built(release_world: ReleaseWorld) -> None:
    tables = yaml.safe_load(release_world.r1.read_text())["tables"]
    broken = _derive(release_world.r1, "no-index", tables={**tables, "job_topics": "no-index"})
    checks = await _validate(release_world, broken)
    assert checks["table job_topics"][0]  # the table version is there...
    ok, detail = checks["index job_topics"]
    assert not ok  # ...but the ANN source would find no index of it
    assert "quasar index build" in detail


async def test_validation_refuses_a_signature_an_engine_differs_from(release_world: ReleaseWorld) -> None:
    # The jobs ranker takes another input: its metadata cannot match the feed ranker's signature.
    other_model = release_world.root / "models" / "jobs_ranker.onnx"
    broken = _derive(release_world.r1, "other-model", artifacts={"local_onnx": {"file": str(other_model)}})
    checks = await _validate(release_world, broken)
    ok, detail = checks["engine local_onnx"]
    assert not ok
    assert "input" in detail
    assert "warm-up" not in checks  # a release that cannot serve gets no warm-up requests


async def test_validation_refuses_a_signature_that_differs_from_the_declared_one(
    release_world: ReleaseWorld, tmp_path: Path
) -> None:
    signature = yaml.safe_load((release_world.root / "models" / "feed_ranker.signature.yaml").read_text())
    signature["outputs"][0]["heads"] = list(reversed(signature["outputs"][0]["heads"]))
    changed = tmp_path / "feed_ranker.signature.yaml"
    changed.write_text(yaml.safe_dump(signature))
    checks = await _validate(release_world, _derive(release_world.r1, "other-signature", signature=str(changed)))
    ok, detail = checks["signature"]
    assert not ok
    assert "differs" in detail


@pytest.fixture
async def release_gateway(release_world: ReleaseWorld, tmp_path: Path) -> AsyncIterator[tuple[object, Path]]:
    state = tmp_path / "state"
    settings = make_settings(release_world.root, admin_token=TOKEN, state_dir=state, default_timeout_s=5.0)
    running = await start_gateway(settings, Gates())
    yield running, state
    await running.channel.close()
    await running.server.drain_and_stop()


async def _apply(channel: grpc.aio.Channel, manifest: Path, percent: float = 0.0) -> admin_pb2.ReleaseStatus:
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    request = admin_pb2.ApplyReleaseRequest(manifest_path=str(manifest), canary_percent=percent)
    return await admin.ApplyRelease(request, metadata=AUTH, timeout=60)


def _ranker_target(response: feed_pb2.GetFeedResponse) -> str:
    (target,) = [m.target for m in response.model_versions if m.model == "feed_ranker"]
    return target


async def test_apply_under_load_fails_no_request_and_mixes_no_releases(
    release_gateway: tuple[object, Path], release_world: ReleaseWorld
) -> None:
    running, _state = release_gateway
    channel = running.channel  # type: ignore[attr-defined]
    stub = feed_pb2_grpc.FeedServiceStub(channel)
    r1 = load_release(release_world.r1).name
    status = await _apply(channel, release_world.r1)
    assert status.changed.stable == r1
    assert any(c.name == "warm-up" and c.ok for c in status.checks)

    answers: list[feed_pb2.GetFeedResponse] = []
    failures: list[str] = []
    switched = asyncio.Event()
    loaded = asyncio.Event()

    async def client(member: int) -> None:
        seen_after = 0
        while seen_after < 5:  # keep calling until 5 answers came after the switch
            try:
                answers.append(await stub.GetFeed(feed_pb2.GetFeedRequest(member_id=member, count=20), timeout=5))
            except grpc.aio.AioRpcError as error:
                failures.append(f"{error.code().name}: {error.details()}")
            if len(answers) >= 16:
                loaded.set()
            if switched.is_set():
                seen_after += 1

    clients = [asyncio.create_task(client(member)) for member in range(1, 9)]
    await loaded.wait()  # load is running on the first release
    status = await _apply(channel, release_world.r2)
    switched.set()
    await asyncio.gather(*clients)

    r2 = load_release(release_world.r2).name
    assert failures == []
    assert status.changed.stable == r2
    assert list(status.changed.history) == [r1]
    releases = [a.release for a in answers]
    assert releases[0] == r1
    assert releases[-1] == r2
    for answer in answers:  # the ranker route always belongs to the release the answer names
        assert not answer.degraded, answer.degraded_reasons
        assert _ranker_target(answer) == f"local_onnx/feed_ranker@{answer.release}", answer.release
        assert answer.arm == "stable"


async def test_a_pushed_table_pinned_by_a_release_serves_without_a_restart(
    release_gateway: tuple[object, Path], release_world: ReleaseWorld
) -> None:
    running, state = release_gateway
    gateway = running.server  # type: ignore[attr-defined]
    member = 42
    request_ids = iter(range(1000))

    async def ranked() -> tuple[str, str, list[int]]:
        from remix.request import FeedRequest

        answer = await gateway.app.get_feed(
            FeedRequest(request_id=f"r{next(request_ids)}", member_id=member, count=20), timeout_s=5.0
        )
        ctx = answer.context
        return ctx.serving.release, ctx.table_versions[PUSHED_TABLE], answer.feed.item_id.tolist()

    await _apply(running.channel, release_world.r1)  # type: ignore[attr-defined]
    release, version, items_r1 = await ranked()
    assert version != PUSHED_VERSION
    await _apply(running.channel, release_world.r2)  # type: ignore[attr-defined]
    release, version, items_r2 = await ranked()
    assert (release, version) == (load_release(release_world.r2).name, PUSHED_VERSION)
    assert items_r2 != items_r1  # other item vectors, another ranking: the pushed version is what serves
    assert json.loads((state / "releases.json").read_text())["lines"]["feed_ranker"]["stable"] == str(release_world.r2)

    admin = admin_pb2_grpc.AdminServiceStub(running.channel)  # type: ignore[attr-defined]
    status = await admin.RollbackRelease(admin_pb2.RollbackReleaseRequest(), metadata=AUTH, timeout=60)
    assert status.changed.stable == load_release(release_world.r1).name
    release, version, items = await ranked()
    assert version != PUSHED_VERSION
    assert items == items_r1


async def test_a_canary_serves_a_sticky_share_of_members(
    release_gateway: tuple[object, Path], release_world: ReleaseWorld
) -> None:
    running, _state = release_gateway
    channel = running.channel  # type: ignore[attr-defined]
    stub = feed_pb2_grpc.FeedServiceStub(channel)
    await _apply(channel, release_world.r1)
    status = await _apply(channel, release_world.r2, percent=30.0)
    assert status.changed.canary == load_release(release_world.r2).name
    assert status.changed.canary_percent == pytest.approx(30.0)

    async def arm(member: int) -> tuple[str, str]:
        answer = await stub.GetFeed(feed_pb2.GetFeedRequest(member_id=member, count=5), timeout=5)
        assert _ranker_target(answer) == f"local_onnx/feed_ranker@{answer.release}"
        return answer.arm, answer.release

    members = range(1, 201)
    first = [await arm(m) for m in members]
    again = [await arm(m) for m in members]
    assert first == again  # sticky
    share = sum(a == "canary" for a, _ in first) / len(first)
    assert 0.2 < share < 0.4
    assert {r for a, r in first if a == "canary"} == {status.changed.canary}

    admin = admin_pb2_grpc.AdminServiceStub(channel)
    status = await admin.RollbackRelease(admin_pb2.RollbackReleaseRequest(), metadata=AUTH, timeout=60)
    assert status.changed.canary == ""
    assert {await arm(m) for m in members} == {("stable", load_release(release_world.r1).name)}


async def test_a_restarted_gateway_serves_the_releases_it_was_given(
    release_world: ReleaseWorld, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    settings = make_settings(release_world.root, admin_token=TOKEN, state_dir=state)
    first = await start_gateway(settings, Gates())
    try:
        await _apply(first.channel, release_world.r2)
    finally:
        await first.channel.close()
        await first.server.drain_and_stop()
    second = await start_gateway(settings, Gates())
    try:
        answer = await second.stub.GetFeed(feed_pb2.GetFeedRequest(member_id=7, count=5), timeout=5)
        assert answer.release == load_release(release_world.r2).name
    finally:
        await second.channel.close()
        await second.server.drain_and_stop()


async def test_apply_refuses_an_invalid_release_and_keeps_serving(
    release_gateway: tuple[object, Path], release_world: ReleaseWorld
) -> None:
    running, _state = release_gateway
    channel = running.channel  # type: ignore[attr-defined]
    await _apply(channel, release_world.r1)
    tables = yaml.safe_load(release_world.r1.read_text())["tables"]
    broken = _derive(release_world.r1, "broken", tables={**tables, "member": "never-pushed"})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _apply(channel, broken)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = refused.value.details() or ""
    assert "table member" in details
    assert "never-pushed" in details
    assert str(release_world.root) not in details  # no gateway path reaches the caller
    answer = await feed_pb2_grpc.FeedServiceStub(channel).GetFeed(feed_pb2.GetFeedRequest(member_id=3), timeout=5)
    assert answer.release == load_release(release_world.r1).name
    routes = running.server.app.router.routes  # type: ignore[attr-defined]
    assert "feed_ranker@broken" not in routes  # installed for its warm-up only, removed with the refusal
    assert f"feed_ranker@{load_release(release_world.r1).name}" in routes


def _jobs_release(world: Path, directory: Path, name: str, tables: dict[str, str]) -> Path:
    """A release of the jobs product's ranker (its own line), with a validation sample of its own outputs."""
    import onnxruntime as ort

    model = world / "models" / "jobs_ranker.onnx"
    inputs = np.random.default_rng(2).random((64, 8), dtype=np.float32)
    (scores,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"features": inputs})
    np.savez(directory / f"{name}.npz", **{"in.features": inputs, "out.scores": scores})
    path = directory / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "release": name,
                "model": "jobs_ranker",
                "signature": str(world / "models" / "jobs_ranker.signature.yaml"),
                "artifacts": {"jobs_onnx": {"file": str(model)}},
                "tables": tables,
                "route": {"targets": [{"engine": "jobs_onnx"}]},
                "validation": {"sample": f"{name}.npz", "workflow": "jobs", "warmup_requests": 4},
            }
        )
    )
    return path


async def test_two_products_release_apart_and_may_not_pin_a_table_two_ways(
    release_gateway: tuple[object, Path], release_world: ReleaseWorld, tmp_path: Path
) -> None:
    running, _state = release_gateway
    channel = running.channel  # type: ignore[attr-defined]
    stub = feed_pb2_grpc.FeedServiceStub(channel)
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    feed = load_release(release_world.r1).name
    await _apply(channel, release_world.r1)
    jobs = _jobs_release(release_world.root, tmp_path, "jobs-1", {})
    status = await _apply(channel, jobs)
    assert {(line.model, line.stable) for line in status.lines} == {("feed_ranker", feed), ("jobs_ranker", "jobs-1")}

    feed_answer = await stub.GetFeed(feed_pb2.GetFeedRequest(member_id=5, count=5), timeout=5)
    jobs_answer = await stub.GetFeed(feed_pb2.GetFeedRequest(member_id=5, count=5, workflow="jobs"), timeout=5)
    assert (feed_answer.release, feed_answer.arm) == (feed, "stable")  # each answer names what served it
    assert (jobs_answer.release, jobs_answer.arm) == ("jobs-1", "stable")
    assert {m.target for m in jobs_answer.model_versions if m.model == "jobs_ranker"} == {
        "jobs_onnx/jobs_ranker@jobs-1"
    }

    # Both lines serve every request: a jobs release may not pin a table the feed's pins otherwise.
    feed_tables = yaml.safe_load(release_world.r1.read_text())["tables"]
    conflicting = _jobs_release(release_world.root, tmp_path, "jobs-2", {PUSHED_TABLE: PUSHED_VERSION})
    assert feed_tables[PUSHED_TABLE] != PUSHED_VERSION
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _apply(channel, conflicting)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"table {PUSHED_TABLE} is pinned at" in (refused.value.details() or "")

    with pytest.raises(grpc.aio.AioRpcError) as ambiguous:
        await admin.RollbackRelease(admin_pb2.RollbackReleaseRequest(), metadata=AUTH, timeout=60)
    assert "name the model" in (ambiguous.value.details() or "")
    await _apply(channel, release_world.r2)
    status = await admin.RollbackRelease(
        admin_pb2.RollbackReleaseRequest(model="feed_ranker"), metadata=AUTH, timeout=60
    )
    assert (status.changed.model, status.changed.stable) == ("feed_ranker", feed)
    assert {(line.model, line.stable) for line in status.lines} == {("feed_ranker", feed), ("jobs_ranker", "jobs-1")}


async def test_the_deploy_command_applies_to_every_gateway_named_and_says_what_serves(
    release_world: ReleaseWorld, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from quasar.cli import main

    pods = [
        await start_gateway(
            make_settings(release_world.root, admin_token=TOKEN, state_dir=tmp_path / f"pod{i}"), Gates()
        )
        for i in range(2)
    ]
    try:
        targets = [arg for pod in pods for arg in ("--target", pod.target)]

        def deploy(*args: str) -> str:
            result = CliRunner().invoke(main, ["deploy", *args, "--token", TOKEN], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            return result.output

        applied = await asyncio.to_thread(deploy, "apply", str(release_world.r2), *targets)
        r2 = load_release(release_world.r2).name
        assert applied.count("gateway 127.0.0.1:") == 2
        assert "warm-up" in applied
        for pod in pods:
            answer = await pod.stub.GetFeed(feed_pb2.GetFeedRequest(member_id=9, count=5), timeout=5)
            assert answer.release == r2
        status = await asyncio.to_thread(deploy, "status", "--target", pods[1].target)
        assert "feed_ranker" in status
        assert r2 in status
    finally:
        for pod in pods:
            await pod.channel.close()
            await pod.server.drain_and_stop()


def test_deploy_validate_exits_0_for_a_valid_release_and_1_naming_the_failed_check(release_world: ReleaseWorld) -> None:
    from click.testing import CliRunner

    from quasar.cli import main

    tables = yaml.safe_load(release_world.r1.read_text())["tables"]
    broken = _derive(release_world.r1, "cli-missing-table", tables={**tables, "member": "never-pushed"})
    runner = CliRunner()
    valid = runner.invoke(main, ["deploy", "validate", str(release_world.r1), "--world", str(release_world.root)])
    assert valid.exit_code == 0, valid.output
    assert "is valid" in valid.output
    invalid = runner.invoke(main, ["deploy", "validate", str(broken), "--world", str(release_world.root)])
    assert invalid.exit_code == 1, invalid.output
    assert "NOT valid" in invalid.output
    assert "never-pushed" in invalid.output
