"""`quasar index`: build approximate nearest-neighbour indexes from embedding table versions, and list them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from kvstore import ann
from kvstore.errors import StoreError


def _console() -> Console:
    return Console(highlight=False) if sys.stdout.isatty() else Console(width=150, highlight=False)


def default_index_root(store_root: Path) -> Path:
    """Where indexes go unless --out says otherwise: `indexes/` beside the store root."""
    return store_root.resolve().parent / "indexes"


@click.group("index")
def index() -> None:
    """Approximate nearest-neighbour indexes over embedding tables (the `ann` candidate source)."""


@index.command("build")
@click.option(
    "--store-root",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="embedded store root (the tables' directory)",
)
@click.option("--table", required=True, help="table to index, e.g. item")
@click.option("--version", default=None, help="table version to index (default: the current one)")
@click.option(
    "--out",
    "index_root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="index root (default: indexes/ beside the store root)",
)
@click.option("--metric", type=click.Choice(ann.METRICS), default="ip", show_default=True)
@click.option("--connectivity", type=click.IntRange(2, 256), default=16, show_default=True, help="HNSW M")
@click.option("--expansion-add", type=click.IntRange(min=1), default=128, show_default=True, help="efConstruction")
@click.option(
    "--expansion-search",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="ef; raise it when the measured recall is low (trained embeddings of unequal norms)",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="build threads (default: all cores)")
@click.option("--recall-k", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--recall-queries", type=click.IntRange(min=0), default=200, show_default=True, help="table rows used as queries"
)
def build_command(
    store_root: Path,
    table: str,
    version: str | None,
    index_root: Path | None,
    metric: ann.Metric,
    connectivity: int,
    expansion_add: int,
    expansion_search: int,
    threads: int | None,
    recall_k: int,
    recall_queries: int,
) -> None:
    """Build the index of TABLE@VERSION, measure its recall against exact search, save it beside the table."""
    console = _console()
    root = index_root or default_index_root(store_root)
    try:
        started = time.perf_counter()
        resolved, ids, vectors = ann.read_embedded_table(store_root, table, version)
        destination = ann.index_dir(root, table, resolved)
        if destination.exists():
            raise ValueError(f"{destination} already exists; indexes are immutable: delete it to rebuild")
        console.print(
            f"{table}@{resolved}: read {len(ids):,} rows x {vectors.shape[1]} "
            f"in {time.perf_counter() - started:.2f} s (verified)"
        )
        params = ann.HnswParams(
            connectivity=connectivity, expansion_add=expansion_add, expansion_search=expansion_search
        )
        built = ann.build_index(
            ids,
            vectors,
            metric=metric,
            params=params,
            threads=threads,
            recall_k=recall_k,
            recall_queries=recall_queries,
            table=table,
            table_version=resolved,
        )
        meta = built.meta
        console.print(
            f"built {meta.library} {meta.library_version} HNSW ({metric}, M={connectivity}, "
            f"efConstruction={expansion_add}) in {meta.build_seconds:.2f} s"
        )
        if meta.recall is not None:
            console.print(
                f"recall@{meta.recall.k} {meta.recall.value:.4f} against exact search "
                f"({meta.recall.queries} table rows as queries, ef=max({expansion_search}, k))"
            )
        started = time.perf_counter()
        built.save(destination)
    except (StoreError, ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    console.print(f"saved {destination} in {time.perf_counter() - started:.2f} s")


@index.command("list")
@click.option(
    "--index-root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="index root, as given to `quasar index build --out`",
)
@click.option("--table", default=None, help="only this table")
def list_command(index_root: Path, table: str | None) -> None:
    """Every index under INDEX_ROOT: the table version it was built from, its shape and measured recall."""
    out = Table(title=f"ANN indexes in {index_root}")
    for column in ("table", "version", "metric", "dim", "rows", "recall", "library", "created", "state"):
        out.add_column(column, justify="right" if column in ("dim", "rows", "recall") else "left")
    try:
        found = ann.list_indexes(index_root, table)
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    for name, version in found:
        try:
            meta = ann.read_meta(ann.index_dir(index_root, name, version))
        except StoreError as error:  # one damaged index must not hide the others
            out.add_row(name, version, "", "", "", "", "", "", f"unreadable: {error}")
            continue
        measured = f"@{meta.recall.k} {meta.recall.value:.4f}" if meta.recall else "-"
        out.add_row(
            name,
            version,
            meta.metric,
            str(meta.dim),
            f"{meta.count:,}",
            measured,
            f"{meta.library} {meta.library_version}",
            meta.created_at[:19],
            "complete",
        )
    _console().print(out)
