"""`quasar routes`: read and change a running gateway's routes through its admin RPC (quasar.v1.AdminService)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import NoReturn, TextIO, TypeVar

import click
import grpc
import yaml

from quasar._client_channel import ClientTls, tls_options
from quasar.v1 import admin_pb2, admin_pb2_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")

_DEFAULT_TARGET = "127.0.0.1:50051"

_TARGET = click.option("--target", default=_DEFAULT_TARGET, show_default=True, metavar="HOST:PORT", help="the gateway")
_TOKEN = click.option(
    "--token",
    envvar="QUASAR_ADMIN_TOKEN",
    required=True,
    metavar="TOKEN",
    help="the gateway's admin token (default: $QUASAR_ADMIN_TOKEN); never printed",
)
_TIMEOUT = click.option(
    "--timeout", "--timeout-s", "timeout_s", type=click.FloatRange(min=0.0, min_open=True), default=10.0,
    show_default=True, metavar="SECONDS", help="call deadline",
)  # fmt: skip


def _call(
    target: str,
    tls: ClientTls,
    token: str,
    timeout_s: float,
    method: Callable[[admin_pb2_grpc.AdminServiceStub], grpc.UnaryUnaryMultiCallable[Req, Resp]],
    request: Req,
) -> Resp:
    """One admin call on a synchronous channel (the CLI is not on the request path), with the bearer token
    and a deadline. A refused call is the operator's to fix, not a crash: it prints `error: CODE: details`
    on stderr and exits 2, without a traceback."""
    if not token:
        raise click.BadParameter("the admin token must not be empty", param_hint="'--token'")
    with tls.channel(target) as channel:
        try:
            return method(admin_pb2_grpc.AdminServiceStub(channel))(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=timeout_s
            )
        except grpc.RpcError as error:
            _fail(error)


def _fail(error: grpc.RpcError) -> NoReturn:
    click.echo(f"error: {error.code().name}: {error.details() or ''}", err=True)
    raise SystemExit(2)


@click.group("routes")
def routes() -> None:
    """A running gateway's routes (logical model → engine targets), read and changed at run time."""


@routes.command("show")
@_TARGET
@_TOKEN
@_TIMEOUT
@tls_options
def show_command(
    target: str,
    token: str,
    timeout_s: float,
    tls: ClientTls,
) -> None:
    """Print the routes in force as YAML, after comments that give their version and the engines targets
    may name. The output is valid input for `quasar routes set`."""
    reply = _call(target, tls, token, timeout_s, lambda stub: stub.GetRoutes, admin_pb2.GetRoutesRequest())
    click.echo(f"# routes version: {reply.version}")
    click.echo(f"# engines: {', '.join(reply.engines) or '-'}")
    click.echo(yaml.safe_dump(json.loads(reply.routes_json), sort_keys=True), nl=False)


@routes.command("set")
@click.argument("routes_file", metavar="[FILE]", type=click.File("r"), required=False)
@click.option("--remove", "remove", multiple=True, metavar="NAME", help="remove this route (repeatable)")
@click.option("--dry-run", is_flag=True, help="validate and check the new targets, change nothing")
@click.option(
    "--expected-version", default="", metavar="V",
    help="apply only if the routes in force still have this version (from `quasar routes show`)",
)  # fmt: skip
@_TARGET
@_TOKEN
@_TIMEOUT
@tls_options
def set_command(
    routes_file: TextIO | None,
    remove: tuple[str, ...],
    dry_run: bool,
    expected_version: str,
    target: str,
    token: str,
    timeout_s: float,
    tls: ClientTls,
) -> None:
    """Replace the routes named in FILE (YAML or JSON: logical model → route; `-` reads stdin) and remove
    the --remove ones, in one atomic swap. Routes FILE does not name stay as they are."""
    if routes_file is None and not remove:
        raise click.UsageError("give a routes FILE, --remove NAME, or both")
    request = admin_pb2.SetRoutesRequest(
        routes=routes_file.read() if routes_file is not None else "",
        remove=remove,
        expected_version=expected_version,
        dry_run=dry_run,
    )
    reply = _call(target, tls, token, timeout_s, lambda stub: stub.SetRoutes, request)
    changed = ", ".join(reply.changed) or "none"
    if dry_run:
        click.echo(f"dry run: nothing was changed; would be routes version {reply.version}, changing: {changed}")
    else:
        click.echo(f"routes version: {reply.version}")
        click.echo(f"changed: {changed}")
