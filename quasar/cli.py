"""The `quasar` command line: serve the gateway, call it, build the demo world."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import grpc
from rich.console import Console
from rich.table import Table

from quasar._client_channel import ClientTls, tls_options
from quasar.cli_embeddings import embeddings
from quasar.cli_routes import routes
from quasar.v1 import feed_pb2, feed_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_WORLD = Path("var/world")


@click.group()
def main() -> None:
    """Quasar: online serving and inference federation for ranked feeds."""


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="settings YAML")
@click.option("--host", default=None, help="bind address (default 127.0.0.1)")
@click.option("--port", type=int, default=None, help="gRPC port (default 50051; 0 picks one)")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (default 9464)")
@click.option("--world", "world_dir", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="gateway processes (default: one per available core)"
)
def serve(
    config_file: Path | None,
    host: str | None,
    port: int | None,
    metrics_port: int | None,
    world_dir: Path | None,
    workers: int | None,
) -> None:
    """Run the gRPC gateway until SIGTERM/SIGINT, then drain and stop.

    With more than one worker (the default on a machine with several cores), a supervisor runs that many
    gateway processes on the one port and serves their metrics together (see `gateway.workers`).

    A bad configuration (settings file, workflow files, engines and routes) exits with status 2 and one
    `error: <file>: <key path>: <message>` line per problem on stderr, without a traceback."""
    from gateway.config_errors import exit_on_config_problems, load_settings_checked
    from gateway.runner import run_gateway
    from gateway.workers import available_cores, run_workers

    with exit_on_config_problems():
        settings = load_settings_checked(
            config_file, host=host, port=port, metrics_port=metrics_port, world_dir=world_dir, workers=workers
        )
        count = settings.workers or available_cores()
        if count == 1:
            run_gateway(settings)
        else:
            sys.exit(run_workers(settings, count))


@main.command()
@click.option("--member", "member_id", type=int, required=True, help="member id to rank the feed for")
@click.option("--count", type=int, default=0, help="items wanted (default: the server's, 50)")
@click.option("--workflow", default="", help="workflow name (default: feed)")
@click.option("--context", "context_pairs", multiple=True, help="request context entry KEY=VALUE (repeatable)")
@click.option("--debug", is_flag=True, help="show the per-step trace")
@click.option("--target", default=DEFAULT_TARGET, show_default=True)
@click.option("--timeout-s", type=float, default=2.0, show_default=True, help="call deadline")
@tls_options
def feed(
    member_id: int,
    count: int,
    workflow: str,
    context_pairs: tuple[str, ...],
    debug: bool,
    target: str,
    timeout_s: float,
    tls: ClientTls,
) -> None:
    """Call a running gateway and print the ranked feed."""
    context = {}
    for pair in context_pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--context")
        context[key] = value
    request = feed_pb2.GetFeedRequest(member_id=member_id, count=count, workflow=workflow, context=context, debug=debug)
    # Not a terminal (piped, CI, `make demo` logs): rich would assume 80 columns and squeeze the table.
    console = Console() if sys.stdout.isatty() else Console(width=150)
    with tls.channel(target) as channel:
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        started = time.perf_counter()
        try:
            response = stub.GetFeed(request, timeout=timeout_s)
        except grpc.RpcError as error:
            console.print(f"[red]GetFeed failed: {error.code().name}: {error.details()}[/red]")
            sys.exit(1)
        elapsed_ms = (time.perf_counter() - started) * 1e3
    _print_feed(console, response, elapsed_ms)


def _print_feed(console: Console, response: feed_pb2.GetFeedResponse, elapsed_ms: float) -> None:
    objectives = [score.objective for score in response.items[0].objective_scores] if response.items else []
    table = Table(title=f"feed for request {response.request_id} ({len(response.items)} items)")
    for column in ("#", "item", "type", "source", "author", "score", *objectives):
        table.add_column(column, justify="right" if column not in ("type", "source") else "left")
    for rank, item in enumerate(response.items, start=1):
        table.add_row(
            str(rank),
            str(item.item_id),
            feed_pb2.ItemType.Name(item.item_type).removeprefix("ITEM_TYPE_").lower(),
            "+".join(item.sources) or item.source,
            str(item.author_id),
            f"{item.score:.4f}",
            *(f"{score.score:.3f}" for score in item.objective_scores),
        )
    console.print(table)
    sources = sorted({source for item in response.items for source in item.sources})
    console.print(
        f"workflow {response.workflow}@{response.workflow_version}  sources {', '.join(sources)}  "
        f"server {response.server_ms:.1f} ms  round trip {elapsed_ms:.1f} ms"
    )
    if response.release:
        console.print(f"release {response.release} ({response.arm})")
    for model in response.model_versions:
        console.print(f"model {model.model} → {model.target} (version {model.version})")
    if response.degraded:
        console.print(f"[yellow]degraded: {'; '.join(response.degraded_reasons)}[/yellow]")
    if response.trace:
        trace = Table(title="trace")
        for column in ("step", "outcome", "ms", "budget left ms", "detail"):
            trace.add_column(column)
        for entry in response.trace:
            trace.add_row(
                entry.name, entry.outcome, f"{entry.elapsed_ms:.2f}", f"{entry.budget_left_ms:.1f}", entry.detail
            )
        console.print(trace)


@main.command("wait-ready")
@click.option("--target", default=DEFAULT_TARGET, show_default=True)
@click.option("--timeout-s", type=float, default=120.0, show_default=True)
@tls_options
def wait_ready(
    target: str,
    timeout_s: float,
    tls: ClientTls,
) -> None:
    """Block until the gateway's grpc.health.v1 check says SERVING (exit 1 on timeout)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with tls.channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                # wait_for_ready blocks on the channel becoming connected instead of polling.
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=""),
                    timeout=max(0.1, deadline - time.monotonic()),
                    wait_for_ready=True,
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    click.echo(f"{target} is SERVING")
                    return
                watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=deadline - time.monotonic())
                for update in watch:
                    if update.status == health_pb2.HealthCheckResponse.SERVING:
                        click.echo(f"{target} is SERVING")
                        return
            except grpc.RpcError as error:
                if error.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise click.ClickException(f"health check failed: {error.code().name}: {error.details()}") from None
    raise click.ClickException(f"{target} not SERVING after {timeout_s:.0f} s")


@main.group()
def world() -> None:
    """The deterministic demo world: corpus, embedding tables and models."""


@world.command("build")
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_WORLD, show_default=True
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--members", type=int, default=10_000, show_default=True)
@click.option("--items", type=int, default=100_000, show_default=True)
@click.option("--force", is_flag=True, help="rebuild even if a world with the same seed and sizes exists")
def world_build(out_dir: Path, seed: int, members: int, items: int, force: bool) -> None:
    """Generate the corpus, train the first-pass and second-pass models, write the embedding tables."""
    from quasar.demo.build import build_world

    build_world(out_dir, seed=seed, members=members, items=items, force=force, progress=True)


@main.command()
@click.option(
    "--world", "world_dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_WORLD, show_default=True
)
@click.option("--port", type=int, default=50051, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
def demo(world_dir: Path, port: int, seed: int) -> None:
    """Build the demo world if needed, then serve it on embedded defaults (no external servers)."""
    from gateway.runner import run_gateway
    from gateway.settings import load_settings
    from quasar.demo.build import build_world

    build_world(world_dir, seed=seed, progress=True)
    run_gateway(load_settings(None, port=port, world_dir=world_dir))


main.add_command(embeddings)
main.add_command(routes)


from quasar.cli_ray import ray  # noqa: E402  (a command group of its own module, registered last)

main.add_command(ray)

from quasar.cli_features import features  # noqa: E402

main.add_command(features)

from quasar.cli_candidates import candidates  # noqa: E402

main.add_command(candidates)

from quasar.cli_index import index  # noqa: E402

main.add_command(index)

from quasar.cli_deploy import deploy  # noqa: E402

main.add_command(deploy)

from quasar.cli_health import health  # noqa: E402

main.add_command(health)

from quasar.cli_replay import replay  # noqa: E402

main.add_command(replay)
