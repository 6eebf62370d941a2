"""`quasar deploy`: validate a release offline, apply or roll it back on a running gateway, say what serves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from quasar._client_channel import ClientTls, tls_options
from quasar.cli_routes import _DEFAULT_TARGET, _TARGET, _TIMEOUT, _TOKEN, _call
from quasar.v1 import admin_pb2


def _percent(value: str) -> float:
    text = value.strip().removesuffix("%")
    try:
        percent = float(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a percentage (e.g. 5%)", param_hint="'--canary'") from None
    if not 0.0 < percent <= 100.0:
        raise click.BadParameter(f"a canary share is in (0, 100]%, got {value}", param_hint="'--canary'")
    return percent


def _print_status(reply: admin_pb2.ReleaseStatus) -> None:
    console = Console(highlight=False)
    if reply.checks:
        checks = Table(title="validation")
        for column in ("check", "result", "detail"):
            checks.add_column(column)
        for check in reply.checks:
            checks.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAIL[/red]", check.detail)
        console.print(checks)
    if not reply.lines:
        console.print("no release in force: every model serves the deployment's own routes and table versions")
        return
    lines = Table(title="releases in force")
    for column in ("model", "stable", "canary", "history (rollback restores the last)"):
        lines.add_column(column)
    for line in reply.lines:
        canary = f"{line.canary} ({line.canary_percent:g}% of members)" if line.canary else "-"
        lines.add_row(line.model, line.stable or "-", canary, ", ".join(line.history) or "-")
    console.print(lines)


_TARGETS = click.option(
    "--target",
    "targets",
    multiple=True,
    default=(_DEFAULT_TARGET,),
    show_default=True,
    metavar="HOST:PORT",
    help="a gateway (repeat for each pod: applied one after the other, stopping at the first refusal)",
)


@click.group("deploy")
def deploy() -> None:
    """Releases: one model's artifacts, signature, pinned tables, route and offline statistics, validated,
    switched atomically on every worker, rolled back as one unit."""


@deploy.command("validate")
@click.argument("release", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="settings YAML")
@click.option("--world", "world_dir", type=click.Path(path_type=Path, file_okay=False), default=None)
def validate_command(release: Path, config_file: Path | None, world_dir: Path | None) -> None:
    """Check RELEASE against a deployment, in this process (no gateway needed): every table at its pinned
    version, every artifact's metadata against the signature, the validation sample's scores, warm-up
    requests within budget. Prints one line per check; exits 1 when one fails."""
    from gateway.config_errors import exit_on_config_problems, load_settings_checked
    from gateway.release_validation import ValidationReport

    with exit_on_config_problems():
        settings = load_settings_checked(config_file, world_dir=world_dir, metrics_port=None, state_dir=None)

    async def run() -> ValidationReport:
        from gateway.app import FeedApp
        from gateway.release_manifest import load_release
        from gateway.releases import ReleaseRejected

        app = FeedApp(settings)
        await app.start()
        try:
            manifest = load_release(release)
            try:
                await app.releases.load_artifacts(manifest)
            except ReleaseRejected as error:
                from gateway.release_validation import Check

                return ValidationReport(manifest.name, (Check("artifacts", False, str(error)),))
            return await app.releases.validate(manifest)
        finally:
            await app.close()

    from gateway.release_manifest import ReleaseError

    try:
        report = asyncio.run(run())
    except ReleaseError as error:
        raise click.ClickException(str(error)) from None
    table = Table(title=f"release {report.release}")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    for check in report.checks:
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAIL[/red]", check.detail)
    Console(highlight=False).print(table)
    if not report.ok:
        click.echo(f"release {report.release} is NOT valid", err=True)
        raise SystemExit(1)
    click.echo(f"release {report.release} is valid")


@deploy.command("apply")
@click.argument("release", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--canary", "canary", default=None, metavar="PERCENT", help="serve it to this share of members first")
@click.option("--dry-run", is_flag=True, help="validate and load on the gateway, switch nothing")
@_TARGETS
@_TOKEN
@_TIMEOUT
@tls_options
def apply_command(
    release: Path,
    canary: str | None,
    dry_run: bool,
    targets: tuple[str, ...],
    token: str,
    timeout_s: float,
    tls: ClientTls,
) -> None:
    """Apply RELEASE (a manifest path the gateway can read) on a running gateway: validated and loaded on
    every worker, then tables, pins and routes switch together. With --canary 5%, a sticky 5% of members
    get it and the rest keep the stable release."""
    request = admin_pb2.ApplyReleaseRequest(
        manifest_path=str(release.resolve()),
        canary_percent=0.0 if canary is None else _percent(canary),
        dry_run=dry_run,
    )
    for target in targets:
        if len(targets) > 1:
            click.echo(f"gateway {target}:")
        reply = _call(target, tls, token, max(timeout_s, 60.0), lambda stub: stub.ApplyRelease, request)
        if dry_run:
            click.echo("dry run: validated and loaded, nothing switched")
        _print_status(reply)


@deploy.command("rollback")
@click.option("--model", default="", metavar="MODEL", help="the release line (needed when several models have one)")
@_TARGETS
@_TOKEN
@_TIMEOUT
@tls_options
def rollback_command(model: str, targets: tuple[str, ...], token: str, timeout_s: float, tls: ClientTls) -> None:
    """Drop the model's canary, or when there is none restore its previous stable release."""
    request = admin_pb2.RollbackReleaseRequest(model=model)
    for target in targets:
        if len(targets) > 1:
            click.echo(f"gateway {target}:")
        reply = _call(target, tls, token, max(timeout_s, 60.0), lambda stub: stub.RollbackRelease, request)
        _print_status(reply)


@deploy.command("status")
@_TARGET
@_TOKEN
@_TIMEOUT
@tls_options
def status_command(target: str, token: str, timeout_s: float, tls: ClientTls) -> None:
    """Which releases serve, per model: the stable one, a canary and its share, the history rollback walks
    back."""
    _print_status(_call(target, tls, token, timeout_s, lambda stub: stub.GetReleases, admin_pb2.GetReleasesRequest()))
