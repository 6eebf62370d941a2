"""Bulk loading of embedding tables: push a file into a store, verified, then current; list, rollback, gc.

A push writes a new version beside the current one (readers never see it half written), checks that every
id landed and that a random sample reads back equal to the source (after rounding through the storage
dtype), and only then makes it current with one atomic switch. A push that fails verification leaves the
version written but not current, for inspection; `gc` removes it later.

Store specs (the CLI's `--store`): `redis://host:port/db[?prefix=qe&buckets=16]` or `embedded:PATH`.
Source files: `.npz` with arrays `ids` [n] and `vectors` [n, dim]; `.npy` holding a structured array with
fields `id` and `vector`, or a plain [n, dim] matrix whose ids are `first_id`, `first_id + 1`, …; or a
directory with `ids.npy` and `vectors.npy` (an embedded store's version directory).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kvstore.admin import EmbeddedAdmin, TableAdmin, VersionInfo
from kvstore.admin import Progress as OnProgress
from kvstore.base import lookup_dtype
from kvstore.errors import StoreError

DEFAULT_SAMPLE = 1000


class VerificationError(StoreError):
    """A pushed version does not read back as written (missing ids, other values, other shape)."""


@dataclass(frozen=True)
class PushReport:
    table: str
    version: str
    count: int
    dim: int
    dtype: str
    sampled: int
    previous: str | None  # the version current before the push
    made_current: bool
    seconds: float


def open_admin(spec: str) -> TableAdmin:
    """The store a spec names, not started: `redis://host:port/db[?prefix=…&buckets=…]` or `embedded:PATH`."""
    if spec.startswith("embedded:"):
        path = spec.removeprefix("embedded:")
        if not path:
            raise ValueError("embedded: needs a path, e.g. embedded:var/world/store")
        return EmbeddedAdmin(Path(path))
    if spec.startswith("redis://"):
        from kvstore.config import RedisStoreConfig

        parts = urlsplit(spec)
        options = dict(parse_qsl(parts.query))
        unknown = sorted(set(options) - {"prefix", "buckets", "pool_size"})
        if unknown:
            raise ValueError(f"unknown store options {unknown} in {spec!r} (known: prefix, buckets, pool_size)")
        url = urlunsplit(parts._replace(query=""))
        return RedisStoreConfig.model_validate({"url": url, **options}).build_admin()
    raise ValueError(f"store must be redis://host:port/db or embedded:PATH, got {spec!r}")


def read_table_file(path: Path, *, first_id: int = 0) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.floating]]:
    """(ids, vectors) from a source file (see the module docstring); ValueError for anything else."""
    path = Path(path)
    if path.is_dir():
        ids, vectors = np.load(path / "ids.npy"), np.load(path / "vectors.npy")
    elif path.suffix == ".npz":
        with np.load(path) as archive:
            if not {"ids", "vectors"} <= set(archive.files):
                raise ValueError(f"{path}: expected arrays 'ids' and 'vectors', found {sorted(archive.files)}")
            ids, vectors = archive["ids"], archive["vectors"]
    elif path.suffix == ".npy":
        data = np.load(path)
        if data.dtype.names is not None:
            if not {"id", "vector"} <= set(data.dtype.names):
                raise ValueError(f"{path}: a structured array needs fields 'id' and 'vector', has {data.dtype.names}")
            ids, vectors = data["id"], data["vector"]
        else:
            ids, vectors = np.arange(first_id, first_id + len(data), dtype=np.int64), data
    else:
        raise ValueError(f"{path}: expected a .npz, a .npy or a version directory")
    ids, vectors = np.asarray(ids), np.asarray(vectors)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise ValueError(f"{path}: ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    if vectors.ndim != 2 or len(vectors) != len(ids) or vectors.dtype.kind not in "fi":
        raise ValueError(
            f"{path}: vectors must be float or int64 [{len(ids)}, dim], got {vectors.dtype} {vectors.shape}"
        )
    return ids.astype(np.int64), vectors


async def push(
    admin: TableAdmin,
    table: str,
    ids: npt.NDArray[np.int64],
    vectors: npt.NDArray[np.floating],
    *,
    dtype: str = "float32",
    version: str | None = None,
    sample: int = DEFAULT_SAMPLE,
    make_current: bool = True,
    console: Console | None = None,
    seed: int = 0,
) -> PushReport:
    """Write, verify (count, then `sample` random rows), then switch. Raises `VerificationError`, leaving
    the written version in place and not current, when the store does not hold what was pushed."""
    started = time.perf_counter()
    console = console or Console(quiet=True)
    with _progress(console, f"{table}: writing") as on_progress:
        version = await admin.write_version(table, ids, vectors, dtype=dtype, version=version, on_progress=on_progress)

    listed = {v.info.version: v for v in await admin.list_versions(table)}
    info = listed[version].info if version in listed else None
    if info is None or (info.count, info.dim, info.dtype) != (len(ids), vectors.shape[1], dtype):
        raise VerificationError(f"{version}: metadata {info} does not describe {len(ids)} x {vectors.shape[1]} {dtype}")
    present = await admin.count_present(table, version, ids)
    if present != len(ids):
        raise VerificationError(f"{version}: {present} of {len(ids)} ids are stored", store=admin.name, table=table)
    rows = np.random.default_rng(seed).choice(len(ids), size=min(sample, len(ids)), replace=False)
    read = await admin.lookup(table, ids[rows], version=version, timeout_s=30.0)
    expected = np.asarray(vectors[rows]).astype(dtype).astype(lookup_dtype(dtype))
    if not read.found.all() or not np.array_equal(read.vectors, expected):
        bad = int(np.flatnonzero(~read.found | (read.vectors != expected).any(axis=1))[0])
        raise VerificationError(
            f"{version}: id {int(ids[rows[bad]])} reads back differently", store=admin.name, table=table
        )
    console.print(f"[green]✓[/green] {table}@{version}: {len(ids):,} rows stored, {len(rows):,} sampled rows equal")

    previous = await admin.current_version(table)
    if make_current:
        await admin.set_current(table, version)
        console.print(f"[green]✓[/green] {table}: current {previous or '-'} → {version}")
    return PushReport(
        table=table,
        version=version,
        count=len(ids),
        dim=int(vectors.shape[1]),
        dtype=dtype,
        sampled=len(rows),
        previous=previous,
        made_current=make_current,
        seconds=time.perf_counter() - started,
    )


async def rollback(admin: TableAdmin, table: str, to: str | None = None) -> tuple[str | None, str]:
    """Make `to` current, or by default the newest complete version older than the current one.

    Returns (previous current, new current). ValueError when there is nothing to roll back to.
    """
    versions = [v for v in await admin.list_versions(table) if v.state == "complete"]
    current = await admin.current_version(table)
    if to is None:
        names = [v.info.version for v in versions]
        if current not in names or names.index(current) == 0:
            raise ValueError(f"{table}: no complete version older than the current {current!r} to roll back to")
        to = names[names.index(current) - 1]
    await admin.set_current(table, to)
    return current, to


async def gc(admin: TableAdmin, keep: int, tables: Sequence[str] = (), *, dry_run: bool = False) -> list[VersionInfo]:
    """Delete all but the newest `keep` versions of each table (all tables when none named); the current
    version is always kept. Returns what was (or, dry run, would be) deleted."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    doomed: list[VersionInfo] = []
    for table in tables or await admin.list_tables():
        versions = await admin.list_versions(table)
        kept = {v.info.version for v in versions[-keep:]}
        doomed += [v for v in versions if v.info.version not in kept and not v.current]
    if not dry_run:
        for version in doomed:
            await admin.delete_version(version.info.name, version.info.version)
    return doomed


@contextmanager
def _progress(console: Console, label: str) -> Iterator[OnProgress]:
    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=console.quiet or not console.is_terminal,
    )
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    with progress:
        yield update
