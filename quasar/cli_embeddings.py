"""`quasar embeddings`: push versioned embedding tables into a store, list them, roll back, collect garbage."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
from rich.console import Console
from rich.table import Table

from kvstore.admin import TableAdmin
from kvstore.errors import StoreError
from kvstore.loader import DEFAULT_SAMPLE, gc, open_admin, push, read_table_file, rollback

T = TypeVar("T")

_STORE = click.option(
    "--store",
    "store_spec",
    required=True,
    help="redis://host:port/db[?prefix=qe&buckets=16] or embedded:PATH",
)


def _console() -> Console:
    return Console(highlight=False) if sys.stdout.isatty() else Console(width=150, highlight=False)


def _run(store_spec: str, action: Callable[[TableAdmin], Awaitable[T]]) -> T:
    """Start the store, run `action`, close it; store and argument errors exit 1 with their message."""

    async def main() -> T:
        admin = open_admin(store_spec)
        await admin.start()
        try:
            return await action(admin)
        finally:
            await admin.close()

    try:
        return asyncio.run(main())
    except (StoreError, ValueError) as error:
        raise click.ClickException(str(error)) from None


@click.group("embeddings")
def embeddings() -> None:
    """Versioned embedding tables: push from files, list, roll back, garbage-collect."""


@embeddings.command("push")
@click.option("--table", required=True, help="table name, e.g. item")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help=".npz (ids, vectors), .npy, or a directory with ids.npy and vectors.npy",
)
@_STORE
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--version", default=None, help="version name (default: a UTC timestamp)")
@click.option("--first-id", type=int, default=0, show_default=True, help="id of row 0 of a plain [n, dim] .npy")
@click.option("--sample", type=int, default=DEFAULT_SAMPLE, show_default=True, help="rows read back to verify")
@click.option("--no-switch", is_flag=True, help="write and verify, but leave the current version as it is")
def push_command(
    table: str,
    source: Path,
    store_spec: str,
    dtype: str,
    version: str | None,
    first_id: int,
    sample: int,
    no_switch: bool,
) -> None:
    """Write FILE as a new version of TABLE, verify it, then make it current atomically."""
    console = _console()
    try:
        ids, vectors = read_table_file(source, first_id=first_id)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    console.print(f"{table}: {len(ids):,} rows x {vectors.shape[1]} from {source} → {store_spec} as {dtype}")
    report = _run(
        store_spec,
        lambda admin: push(
            admin,
            table,
            ids,
            vectors,
            dtype=dtype,
            version=version,
            sample=sample,
            make_current=not no_switch,
            console=console,
        ),
    )
    state = "current" if report.made_current else f"not current (current: {report.previous or '-'})"
    console.print(f"{table}@{report.version}: {report.count:,} rows, {state}, {report.seconds:.1f} s")


@embeddings.command("list")
@_STORE
@click.option("--table", "tables", multiple=True, help="only these tables (repeatable)")
def list_command(store_spec: str, tables: tuple[str, ...]) -> None:
    """Every version of every table, oldest first; * marks the current one."""

    async def listing(admin: TableAdmin) -> Table:
        out = Table(title=f"embedding tables in {store_spec}")
        for column in ("table", "version", "", "dtype", "dim", "rows", "created", "state"):
            out.add_column(column, justify="right" if column in ("dim", "rows") else "left")
        for table in tables or await admin.list_tables():
            for v in await admin.list_versions(table):
                info = v.info
                out.add_row(
                    table,
                    info.version,
                    "*" if v.current else "",
                    info.dtype,
                    str(info.dim),
                    f"{info.count:,}",
                    v.created_at[:19],
                    v.state,
                )
        return out

    _console().print(_run(store_spec, listing))


@embeddings.command("rollback")
@_STORE
@click.option("--table", required=True)
@click.option("--to", "target", default=None, help="version to make current (default: the previous one)")
def rollback_command(store_spec: str, table: str, target: str | None) -> None:
    """Make an older version of TABLE current again (atomically)."""
    previous, current = _run(store_spec, lambda admin: rollback(admin, table, target))
    _console().print(f"{table}: current {previous or '-'} → {current}")


@embeddings.command("gc")
@_STORE
@click.option("--keep", type=click.IntRange(min=1), required=True, help="newest versions kept per table")
@click.option("--table", "tables", multiple=True, help="only these tables (repeatable)")
@click.option("--dry-run", is_flag=True, help="list what would be deleted, delete nothing")
def gc_command(store_spec: str, keep: int, tables: tuple[str, ...], dry_run: bool) -> None:
    """Delete all but the newest KEEP versions of each table; the current version is always kept."""
    doomed = _run(store_spec, lambda admin: gc(admin, keep, tables, dry_run=dry_run))
    verb = "would delete" if dry_run else "deleted"
    console = _console()
    for version in doomed:
        console.print(f"{verb} {version.info.name}@{version.info.version} ({version.info.count:,} rows)")
    console.print(f"{verb} {len(doomed)} version(s)")
