"""`quasar routes show|set`: the admin RPC from the command line, against a real gateway."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from quasar.cli import main
from quasar.v1 import admin_pb2, admin_pb2_grpc
from tests.integration.conftest import Gates, RunningGateway, make_settings, start_gateway
from tests.integration.test_admin import AUTH, TOKEN, engines_config, first_pass_on


@pytest.fixture(scope="module")
async def routes_gateway(small_world: Path, test_workflows: Path) -> AsyncIterator[RunningGateway]:
    settings = make_settings(small_world, test_workflows, admin_token=TOKEN, engines=engines_config(small_world))
    running = await start_gateway(settings, Gates())
    yield running
    await running.channel.close()
    await running.server.drain_and_stop()


@pytest.fixture
def admin(routes_gateway: RunningGateway) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(routes_gateway.channel)


async def quasar(*args: str, token: str | None = TOKEN, stdin: str | None = None) -> Result:
    """Run `quasar ARGS` with QUASAR_ADMIN_TOKEN set to `token` (None: unset). The command blocks on a
    synchronous channel, so it runs in a thread while this loop serves the gateway."""
    runner = CliRunner()
    env = {"QUASAR_ADMIN_TOKEN": token}
    # catch_exceptions=False: an exception other than SystemExit (a traceback for the operator) fails the test.
    return await asyncio.to_thread(
        runner.invoke, main, list(args), input=stdin, env=env, catch_exceptions=False, prog_name="quasar"
    )


async def routes_in_force(admin: admin_pb2_grpc.AdminServiceStub) -> admin_pb2.GetRoutesResponse:
    return await admin.GetRoutes(admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=5)


def first_pass_engine(routes_json: str) -> str:
    engine: str = json.loads(routes_json)["first_pass"]["targets"][0]["engine"]
    return engine


def assert_refused(result: Result, code: str, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {code}: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


async def test_show_prints_the_routes_as_yaml_with_version_and_engines(
    routes_gateway: RunningGateway, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    in_force = await routes_in_force(admin)
    result = await quasar("routes", "show", "--target", routes_gateway.target)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"# routes version: {in_force.version}"
    assert lines[1] == "# engines: local_onnx, xgb_a, xgb_b"
    shown = yaml.safe_load(result.stdout)
    assert shown == json.loads(in_force.routes_json)
    assert sorted(shown) == ["feed_ranker", "first_pass"]
    assert TOKEN not in result.output

    # What `show` prints is what `set` takes: setting it back changes nothing.
    again = await quasar("routes", "set", "-", "--target", routes_gateway.target, stdin=result.stdout)
    assert again.exit_code == 0, again.output
    assert again.stdout == f"routes version: {in_force.version}\nchanged: none\n"


async def test_set_changes_a_route_and_show_reflects_it(
    routes_gateway: RunningGateway, admin: admin_pb2_grpc.AdminServiceStub, tmp_path: Path
) -> None:
    before = await routes_in_force(admin)
    assert first_pass_engine(before.routes_json) == "xgb_a"
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(first_pass_on("xgb_b") + "\n")

    result = await quasar("routes", "set", str(routes_file), "--target", routes_gateway.target)
    assert result.exit_code == 0, result.output
    after = await routes_in_force(admin)
    assert first_pass_engine(after.routes_json) == "xgb_b"
    assert after.version != before.version
    assert result.stdout == f"routes version: {after.version}\nchanged: first_pass\n"

    shown = await quasar("routes", "show", "--target", routes_gateway.target)
    assert shown.stdout.startswith(f"# routes version: {after.version}\n")
    assert yaml.safe_load(shown.stdout)["first_pass"]["targets"][0]["engine"] == "xgb_b"

    # Back through stdin (`-`): the same table has the same version again.
    back = await quasar(
        "routes", "set", "-", "--expected-version", after.version, "--target", routes_gateway.target,
        stdin=first_pass_on("xgb_a"),
    )  # fmt: skip
    assert back.exit_code == 0, back.output
    assert back.stdout == f"routes version: {before.version}\nchanged: first_pass\n"
    assert (await routes_in_force(admin)).version == before.version


async def test_set_adds_and_removes_a_route_without_a_file(
    routes_gateway: RunningGateway, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    before = await routes_in_force(admin)
    added = await quasar(
        "routes", "set", "-", "--target", routes_gateway.target,
        stdin='{"first_pass_copy": {"targets": [{"engine": "xgb_b", "model": "first_pass"}]}}',
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert added.stdout.endswith("changed: first_pass_copy\n")
    assert sorted(json.loads((await routes_in_force(admin)).routes_json)) == [
        "feed_ranker",
        "first_pass",
        "first_pass_copy",
    ]

    removed = await quasar("routes", "set", "--remove", "first_pass_copy", "--target", routes_gateway.target)
    assert removed.exit_code == 0, removed.output
    assert removed.stdout == f"routes version: {before.version}\nchanged: first_pass_copy\n"
    assert (await routes_in_force(admin)).version == before.version


async def test_dry_run_changes_nothing(routes_gateway: RunningGateway, admin: admin_pb2_grpc.AdminServiceStub) -> None:
    before = await routes_in_force(admin)
    result = await quasar(
        "routes", "set", "-", "--dry-run", "--target", routes_gateway.target, stdin=first_pass_on("xgb_b")
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("dry run: nothing was changed; would be routes version ")
    assert result.stdout.endswith("changing: first_pass\n")
    assert before.version not in result.stdout, "the version it would have is the new table's"
    after = await routes_in_force(admin)
    assert after.version == before.version
    assert first_pass_engine(after.routes_json) == "xgb_a"


@pytest.mark.parametrize("how", ["option", "env"])
async def test_a_wrong_token_exits_2_unauthenticated_and_is_never_printed(
    routes_gateway: RunningGateway, admin: admin_pb2_grpc.AdminServiceStub, how: str
) -> None:
    before = await routes_in_force(admin)
    wrong = "not-the-token"
    token_args = ("--token", wrong) if how == "option" else ()
    env_token = TOKEN if how == "option" else wrong  # the option wins over the environment
    for args in (("routes", "show"), ("routes", "set", "-")):
        result = await quasar(
            *args, *token_args, "--target", routes_gateway.target, token=env_token, stdin=first_pass_on("xgb_b")
        )
        assert_refused(result, "UNAUTHENTICATED", "admin calls need metadata 'authorization: Bearer <admin token>'")
        assert wrong not in result.output
    assert (await routes_in_force(admin)).version == before.version


@pytest.mark.parametrize(
    ("routes", "code", "message"),
    [
        ("first_pass: [unclosed", "INVALID_ARGUMENT", "routes are not valid YAML/JSON"),
        ("first_pass: {targets: []}", "INVALID_ARGUMENT", "List should have at least 1 item after validation"),
        (first_pass_on("triton_z"), "INVALID_ARGUMENT", "names engine 'triton_z', which is not defined"),
        (
            "first_pass: {targets: [{engine: xgb_b, model: fpr_typo}]}",
            "FAILED_PRECONDITION",
            "route 'first_pass' target xgb_b/fpr_typo",
        ),
    ],
    ids=["yaml", "no-targets", "unknown-engine", "unknown-model"],
)
async def test_bad_routes_exit_2_with_the_servers_message(
    routes_gateway: RunningGateway, admin: admin_pb2_grpc.AdminServiceStub, routes: str, code: str, message: str
) -> None:
    before = await routes_in_force(admin)
    result = await quasar("routes", "set", "-", "--target", routes_gateway.target, stdin=routes)
    assert_refused(result, code, message)
    assert (await routes_in_force(admin)).version == before.version


async def test_removing_an_unknown_route_exits_2(routes_gateway: RunningGateway) -> None:
    result = await quasar("routes", "set", "--remove", "nope", "--target", routes_gateway.target)
    assert_refused(result, "INVALID_ARGUMENT", "cannot remove routes ['nope']: no such routes")


async def test_a_stale_expected_version_exits_2_aborted(
    routes_gateway: RunningGateway, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    start = await routes_in_force(admin)
    moved = await quasar(
        "routes", "set", "-", "--expected-version", start.version, "--target", routes_gateway.target,
        stdin=first_pass_on("xgb_b"),
    )  # fmt: skip
    assert moved.exit_code == 0, moved.output
    moved_version = (await routes_in_force(admin)).version
    try:
        stale = await quasar(
            "routes", "set", "-", "--expected-version", start.version, "--target", routes_gateway.target,
            stdin=first_pass_on("xgb_a"),
        )  # fmt: skip
        assert_refused(stale, "ABORTED", f"routes are at version {moved_version}, not {start.version}")
        assert (await routes_in_force(admin)).version == moved_version
    finally:
        back = await quasar("routes", "set", "-", "--target", routes_gateway.target, stdin=first_pass_on("xgb_a"))
        assert back.exit_code == 0, back.output
    assert (await routes_in_force(admin)).version == start.version


async def test_an_unreachable_gateway_exits_2_unavailable() -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await quasar("routes", "show", "--target", f"127.0.0.1:{port}", "--timeout", "5")
    assert_refused(result, "UNAVAILABLE", "")


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (("routes", "show"), None, "Missing option '--token'"),
        (("routes", "set", "-"), None, "Missing option '--token'"),
        (("routes", "show", "--token", ""), None, "the admin token must not be empty"),
        (("routes", "set"), TOKEN, "give a routes FILE, --remove NAME, or both"),
        (("routes", "set", "no/such/file.yaml"), TOKEN, "'no/such/file.yaml': No such file or directory"),
    ],
    ids=["show-no-token", "set-no-token", "empty-token", "set-nothing", "set-missing-file"],
)
async def test_usage_errors_exit_2_before_any_call(
    routes_gateway: RunningGateway,
    admin: admin_pb2_grpc.AdminServiceStub,
    args: tuple[str, ...],
    token: str | None,
    message: str,
) -> None:
    before = await routes_in_force(admin)
    result = await quasar(*args, "--target", routes_gateway.target, token=token, stdin=first_pass_on("xgb_b"))
    assert result.exit_code == 2, result.output
    assert "Usage: quasar routes" in result.stderr
    assert message in result.stderr
    assert "error: " not in result.stderr, "no call was made"
    assert (await routes_in_force(admin)).version == before.version
