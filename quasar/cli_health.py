"""`quasar health`: the drift of served releases from their offline stats, read from a gateway's state
directory (`check` for scripts and alerts, `report` for people)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from gateway.artifact_age import AGES_FILE
from health.drift import DriftThresholds
from health.report import Observed, collect, health_table, plot_distributions, plot_history, plot_shadow


def _console() -> Console:
    return Console(highlight=False) if sys.stdout.isatty() else Console(width=160, highlight=False)


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--state-dir",
            required=True,
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="the gateway's state directory (the monitor writes under its health/)",
        ),
        click.option(
            "--releases-dir",
            required=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="where releases' offline stats are (<release>.stats.kll)",
        ),
        click.option("--psi-max", type=click.FloatRange(min=0, min_open=True), default=0.2, show_default=True),
        click.option(
            "--ks-p",
            type=click.FloatRange(0, 1, min_open=True, max_open=True),
            default=0.001,
            show_default=True,
            help="the KS test's significance",
        ),
        click.option(
            "--min-samples",
            type=click.IntRange(min=1),
            default=1000,
            show_default=True,
            help="fewer online values: insufficient data, no alarm",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _collect(
    console: Console, state_dir: Path, releases_dir: Path, thresholds: DriftThresholds
) -> list[Observed] | None:
    try:
        observed = collect(state_dir, releases_dir, thresholds)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    if not observed:
        console.print(f"nothing observed: no window files under {state_dir / 'health'}")
        return None
    console.print(health_table(observed))
    return observed


@click.group("health")
def health() -> None:
    """Online model health: drift of served features and heads from the offline stats of their release."""


@health.command("check")
@_common
def check_command(state_dir: Path, releases_dir: Path, psi_max: float, ks_p: float, min_samples: int) -> None:
    """Print the drift table; exit 1 when any model is unhealthy (an alarm on any name), else 0."""
    console = _console()
    thresholds = DriftThresholds(psi_max=psi_max, ks_p=ks_p, min_samples=min_samples)
    observed = _collect(console, state_dir, releases_dir, thresholds)
    _finish(console, observed or [], _stale_artifacts(console, state_dir))


@health.command("report")
@_common
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def report_command(
    state_dir: Path, releases_dir: Path, psi_max: float, ks_p: float, min_samples: int, out_dir: Path
) -> None:
    """Print the drift table and draw PNGs: distributions (online vs offline), drift over time, shadow
    diffs over time. Exits like `check`."""
    console = _console()
    thresholds = DriftThresholds(psi_max=psi_max, ks_p=ks_p, min_samples=min_samples)
    observed = _collect(console, state_dir, releases_dir, thresholds) or []
    written = plot_distributions(observed, out_dir)
    history = plot_history(state_dir, out_dir, thresholds)
    if not history:
        console.print("no drift history yet (history.jsonl is written by worker 0 at each flush)")
    shadow = plot_shadow(state_dir, out_dir)
    if not shadow:
        console.print("no shadow diffs: skipped the shadow plot")
    for path in [*written, *history, *shadow]:
        console.print(f"wrote {path}")
    _finish(console, observed, _stale_artifacts(console, state_dir))


def _stale_artifacts(console: Console, state_dir: Path) -> list[str]:
    """Tables and indexes in force over their maximum age, from the gateway's last refresh."""
    path = state_dir / "health" / AGES_FILE
    try:
        artifacts = json.loads(path.read_text())["artifacts"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError) as error:
        raise click.ClickException(f"{path}: unreadable ({error})") from None
    table = Table(title="tables and indexes in force")
    for column in ("kind", "name", "version", "age", "max age", "status"):
        table.add_column(column)
    stale = []
    for a in artifacts:
        hours = f"{a['age_s'] / 3600:.1f} h"
        limit = "-" if a["max_age_s"] is None else f"{a['max_age_s'] / 3600:.1f} h"
        table.add_row(a["kind"], a["name"], a["version"], hours, limit, "[red]stale[/red]" if a["stale"] else "ok")
        if a["stale"]:
            stale.append(f"{a['kind']} {a['name']}")
    if artifacts:
        console.print(table)
    return stale


def _finish(console: Console, observed: list[Observed], stale: list[str]) -> None:
    unhealthy = [f"{o.health.model}@{o.health.release}" for o in observed if not o.health.healthy] + stale
    if unhealthy:
        console.print(f"[red]unhealthy: {', '.join(unhealthy)}[/red]")
        raise SystemExit(1)
    console.print("healthy")
