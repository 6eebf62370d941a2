"""Approximate nearest-neighbour indexes built from embedding table versions, and their async searcher.

An index is an immutable artifact built from ONE version of a table and stored beside it, under
`index_root`:

    <table>/<table_version>/index.usearch   the HNSW graph and its vectors (usearch), memory-mapped on load
    <table>/<table_version>/ids.npy         int64 [count]: row position (the library's key) -> item id
    <table>/<table_version>/meta.json       `IndexMeta`: library and version, metric, dim, count, build
                                            params, created_at, the table version, recall measured at build

Like table versions (`kvstore.embedded`), an index directory appears complete or not at all (written
under a temporary name, then renamed) and is never modified. A request that pinned a table version
searches the index of exactly that version, so candidates and features never mix two versions.

Why usearch (see benchmarks/ann_indexes.py): `Index.restore(view=True)` memory-maps the saved graph, so
the gateway's N worker processes share one page-cache copy and loading takes milliseconds; the thread
count is a per-call argument (no process- or thread-wide OpenMP state); a search goes max(ef, k) deep, so
recall holds for k up to 600 without tuning; it releases the GIL while searching.

Scores are similarities, higher is nearer, whatever the metric: the inner product ('ip'), the cosine
('cos'), or minus the squared Euclidean distance ('l2').
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kvstore import embedded
from kvstore._usearch import BatchMatches, Index, MetricKind, usearch
from kvstore.base import sorted_table
from kvstore.errors import CorruptValue, StoreTimeout, StoreUnavailable, TableNotFound

Metric = Literal["ip", "l2", "cos"]
METRICS: tuple[Metric, ...] = ("ip", "l2", "cos")
LIBRARY = "usearch"
INDEX_FILE = "index.usearch"
FORMAT = 1

# What each metric is stored as. Inner product is not a distance, and a graph built on it finds poor
# neighbours when norms differ (trained embeddings): 'ip' is reduced to nearest neighbours under L2 by storing
# row x as [x, sqrt(M - |x|^2)] (M: the largest |x|^2) and searching [q, 0], since |q' - x'|^2 = |q|^2 + M -
# 2 q.x. Measured on the demo's trained item table (100k x 16), recall@100: 0.66 as IP, 0.70 reduced (ef 100);
# 0.75 and 0.87 at ef 256. 'cos' is inner product over unit vectors (rows normalised at build, queries at
# search): usearch's own Cos graph over rows of unequal norms missed true top-1 neighbours that the same rows
# normalised never missed.
_METRIC_KIND = {"ip": MetricKind.L2sq, "l2": MetricKind.L2sq, "cos": MetricKind.IP}
# Same rule as kvstore.embedded: names become path components, temporary directories start with '.'.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_EXACT_CHUNK_CELLS = 4_000_000  # query x row scores held at once by exact_search (16 MB of float32)

T = TypeVar("T")


# -- values -------------------------------------------------------------------------------------------


class Neighbours(NamedTuple):
    """Nearest neighbours of m queries, best first: `ids` int64 [m, k] and `scores` float32 [m, k].

    When fewer than k rows exist, a row is padded at its end with id -1 and score -inf.
    """

    ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]


class HnswParams(BaseModel):
    """Build and search parameters of the graph (the HNSW paper's M, efConstruction and ef)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connectivity: int = Field(default=16, ge=2, le=256, description="links per node (M)")
    expansion_add: int = Field(default=128, ge=1, description="search depth while inserting (efConstruction)")
    expansion_search: int = Field(default=256, ge=1, description="search depth per query (ef); max(ef, k) is used")


class RecallReport(BaseModel):
    """Recall@k of the index against exact search, measured at build on `queries` rows of the table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int
    queries: int
    value: float


class IndexMeta(BaseModel):
    """meta.json of an index artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT
    library: str
    library_version: str
    metric: Metric
    dim: int = Field(ge=1)
    count: int = Field(ge=0)
    params: HnswParams
    created_at: str  # ISO 8601, UTC
    build_seconds: float
    ip_norm_sq: float | None = None  # 'ip' only: M, the largest squared row norm (see _METRIC_KIND)
    table: str = ""  # the table and version it was built from; "" when built from bare arrays
    table_version: str = ""
    recall: RecallReport | None = None  # None for an empty table or when not measured


class SearchOverloaded(StoreUnavailable):
    """The searcher's queue is full: the search was rejected at once, not queued."""


# -- exact search and recall ----------------------------------------------------------------------------


def exact_search(
    ids: npt.ArrayLike,
    vectors: npt.ArrayLike,
    queries: npt.ArrayLike,
    k: int,
    *,
    metric: Metric = "ip",
) -> Neighbours:
    """Brute-force `Neighbours` of `queries` [m, dim] among `vectors` [n, dim] (row i is item `ids[i]`).

    The reference the index is measured against: same score definitions, same padding. Ties at equal
    score keep row order. Memory: bounded by chunking the queries, not by n.
    """
    _check_metric(metric)
    k = _check_k(k)
    id_array = np.asarray(ids, dtype=np.int64)
    table = np.asarray(vectors, dtype=np.float32)
    if table.ndim != 2 or table.shape[0] != id_array.shape[0]:
        raise ValueError(f"vectors must be [{id_array.shape[0]}, dim], got {table.shape}")
    query = _as_queries(queries, table.shape[1])
    if metric == "cos":
        table, query = _unit(table), _unit(query)
    m, n = len(query), len(table)
    out_ids = np.full((m, k), -1, dtype=np.int64)
    out_scores = np.full((m, k), -np.inf, dtype=np.float32)
    take = min(k, n)
    if take == 0 or m == 0:
        return Neighbours(out_ids, out_scores)
    squared_norms = np.einsum("ij,ij->i", table, table) if metric == "l2" else None
    chunk = max(1, _EXACT_CHUNK_CELLS // n)
    for start in range(0, m, chunk):
        block = query[start : start + chunk]
        rows, scores = _best_rows(block, table, squared_norms, take)
        out_ids[start : start + len(block), :take] = id_array[rows]
        out_scores[start : start + len(block), :take] = scores
    return Neighbours(out_ids, out_scores)


def _best_rows(
    queries: npt.NDArray[np.float32],
    table: npt.NDArray[np.float32],
    squared_norms: npt.NDArray[np.float32] | None,
    take: int,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """The `take` best rows of `table` for each query and their scores, best first, ties in row order.
    Scores are inner products, or with `squared_norms` (the rows') minus squared l2 distances."""
    scores = queries @ table.T
    if squared_norms is not None:  # -(|q|^2 - 2 q.v + |v|^2)
        scores = 2 * scores - squared_norms[None, :] - np.einsum("ij,ij->i", queries, queries)[:, None]
    top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.lexsort((top, -top_scores), axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)


def recall(found: Neighbours, exact: Neighbours, *, tolerance: float = 1e-5) -> float:
    """Mean share of each query's exact neighbours that `found` holds, over queries that have any.

    A found id outside the exact list still counts when its score ties the exact k-th best (within
    `tolerance`, relative): among equal scores any choice is correct. Both must be [m, k] alike.
    """
    if found.ids.shape != exact.ids.shape:
        raise ValueError(f"found {found.ids.shape} and exact {exact.ids.shape} neighbours differ in shape")
    shares = []
    for q in range(exact.ids.shape[0]):
        valid = exact.ids[q] >= 0
        wanted = int(np.count_nonzero(valid))
        if wanted == 0:
            continue
        kth = float(exact.scores[q][valid].min())
        got = found.ids[q] >= 0
        hit = np.isin(found.ids[q][got], exact.ids[q][valid]) | (
            found.scores[q][got] >= kth - tolerance * (1.0 + abs(kth))
        )
        shares.append(min(wanted, int(np.count_nonzero(hit))) / wanted)
    return float(np.mean(shares)) if shares else 1.0


# -- the index --------------------------------------------------------------------------------------------


class AnnIndex:
    """One built or loaded index: `search` it, `save` it. Thread-safe for concurrent searches.

    Obtain one from `build_index`, `build_from_embedded` or `AnnIndex.load`; the constructor is internal.
    """

    def __init__(self, index: Index, ids: npt.NDArray[np.int64], meta: IndexMeta) -> None:
        self._index = index
        self._ids = ids
        self.meta = meta
        self._scan: npt.NDArray[np.float32] | None = None  # the stored vectors, when searched exactly
        self._scan_sq_norms: npt.NDArray[np.float32] | None = None  # their squared norms, for 'l2'

    @property
    def exact(self) -> bool:
        """Whether searches scan every vector (`scan_exactly`) rather than walk the graph."""
        return self._scan is not None

    def scan_exactly(self) -> None:
        """Search by scanning all vectors from now on: exact, and for a small index faster than the graph.

        Measured on the demo's job index (15,000 x 16, k = 600, one query): graph 0.30-0.38 ms, scan
        0.07 ms (one matrix-vector product and a partial sort). The graph's cost grows with k and its
        depth, the scan's with the vectors, so the scan wins on small tables searched for many neighbours.
        Copies the vectors into memory (count x stored dim float32: 1 MB for the job index).
        """
        keys = np.arange(self.meta.count, dtype=np.uint64)  # the library's keys are row positions
        stored = np.ascontiguousarray(np.asarray(self._index.get(keys), dtype=np.float32))
        self._scan_sq_norms = np.einsum("ij,ij->i", stored, stored) if self.meta.metric == "l2" else None
        self._scan = stored

    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def count(self) -> int:
        return self.meta.count

    def search(self, queries: npt.ArrayLike, k: int, *, threads: int = 1) -> Neighbours:
        """The k nearest items of each query [m, dim], best first, padded with -1/-inf past `count`.

        Runs on the calling thread plus `threads - 1` library threads (0: all cores); 1 on the request
        path. ValueError for queries that are not finite [m, dim] numbers or k < 1.
        """
        query = _as_queries(queries, self.meta.dim)
        if self.meta.metric == "cos":
            query = _unit(query)  # a zero query stays zero: every score 0, as under 'ip'
        k = _check_k(k)
        m = len(query)
        out_ids = np.full((m, k), -1, dtype=np.int64)
        out_scores = np.full((m, k), -np.inf, dtype=np.float32)
        take = min(k, self.meta.count)
        if take == 0 or m == 0:
            return Neighbours(out_ids, out_scores)
        stored = np.hstack([query, np.zeros((m, 1), dtype=np.float32)]) if self.meta.metric == "ip" else query
        if self._scan is not None:
            self._scan_search(stored, take, out_ids, out_scores)
            return Neighbours(out_ids, out_scores)
        matches = self._index.search(stored, take, threads=threads)
        keys = np.zeros((m, take), dtype=np.int64)
        distances = np.zeros((m, take), dtype=np.float32)
        if isinstance(matches, BatchMatches):
            counts = np.asarray(matches.counts, dtype=np.int64)
            keys[:], distances[:] = matches.keys, matches.distances
        else:  # usearch answers a single query with unpadded 1-D arrays
            counts = np.array([len(matches.keys)], dtype=np.int64)
            keys[0, : counts[0]], distances[0, : counts[0]] = matches.keys, matches.distances
        valid = np.arange(take)[None, :] < counts[:, None]
        out_ids[:, :take][valid] = self._ids[keys[valid]]
        # usearch's distances: the squared distance under L2sq, 1 - dot under IP.
        if self.meta.metric == "ip":  # |q' - x'|^2 = |q|^2 + M - 2 q.x
            norm_sq = np.float32(self.meta.ip_norm_sq or 0.0)
            similarity = (np.einsum("ij,ij->i", query, query)[:, None] + norm_sq - distances) / 2
        elif self.meta.metric == "l2":
            similarity = -distances
        else:
            similarity = 1.0 - distances
        out_scores[:, :take][valid] = similarity[valid]
        return Neighbours(out_ids, out_scores)

    def _scan_search(
        self,
        stored: npt.NDArray[np.float32],
        take: int,
        out_ids: npt.NDArray[np.int64],
        out_scores: npt.NDArray[np.float32],
    ) -> None:
        """`take` best rows per query by score, ties in row order (as `exact_search`), into the outputs.

        Scores as the graph reports them: over the stored rows, the padded 'ip' query gives q.x (its extra
        coordinate is 0) and unit 'cos' rows give the cosine; 'l2' is minus the squared distance."""
        assert self._scan is not None
        rows, scores = _best_rows(stored, self._scan, self._scan_sq_norms, take)
        out_ids[:, :take] = self._ids[rows]
        out_scores[:, :take] = scores

    def save(self, directory: Path) -> Path:
        """Write the artifact to `directory` (normally `index_dir(...)`) atomically and durably.

        The directory appears complete or not at all. ValueError when it already exists: an index is
        immutable; delete the directory to rebuild it.
        """
        directory = Path(directory)
        if directory.exists():
            raise ValueError(f"index {directory} already exists; indexes are immutable: delete it to rebuild")
        parent = directory.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
        try:
            self._index.save(str(staging / INDEX_FILE))
            np.save(staging / "ids.npy", np.ascontiguousarray(self._ids, dtype=np.int64))
            (staging / "meta.json").write_text(self.meta.model_dump_json(indent=2) + "\n")
            for name in (INDEX_FILE, "ids.npy", "meta.json"):
                embedded.fsync_path(staging / name)
            embedded.fsync_path(staging)
            try:
                staging.rename(directory)  # what makes the index exist
            except OSError as error:  # created meanwhile by another builder
                raise ValueError(f"index {directory} already exists; indexes are immutable") from error
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        embedded.fsync_path(parent)
        return directory

    @classmethod
    def load(
        cls, directory: Path, *, mmap: bool = True, expansion_search: int | None = None, exact_max_vectors: int = 0
    ) -> AnnIndex:
        """Open a saved index. `mmap=True` maps the files (pages shared by processes, loaded on first
        touch); False reads them into memory. `expansion_search` overrides the ef saved at build. An
        index of at most `exact_max_vectors` vectors is searched exactly (`scan_exactly`).

        Raises `TableNotFound` when `directory` holds no index and `CorruptValue` when its files are
        unreadable or disagree with meta.json.
        """
        directory = Path(directory)
        meta = read_meta(directory)
        where = {"table": meta.table}
        if meta.library != LIBRARY:
            raise CorruptValue(f"index {directory} was built by {meta.library!r}; this build reads {LIBRARY}", **where)
        try:
            ids = np.asarray(np.load(directory / "ids.npy", mmap_mode="r" if mmap else None))
            index = Index.restore(str(directory / INDEX_FILE), view=mmap)
        except (OSError, ValueError, RuntimeError) as error:
            raise CorruptValue(f"index {directory}: unreadable: {error}", **where) from error
        if index is None:
            raise CorruptValue(f"index {directory}: {INDEX_FILE} is missing", **where)
        if ids.dtype != np.int64 or ids.shape != (meta.count,):
            raise CorruptValue(f"index {directory}: ids.npy is {ids.dtype}{ids.shape}, meta says {meta.count}", **where)
        if (
            index.ndim != _stored_dim(meta.metric, meta.dim)
            or len(index) != meta.count
            or index.metric_kind != _METRIC_KIND[meta.metric]
        ):
            raise CorruptValue(
                f"index {directory}: {INDEX_FILE} holds {len(index)} x {index.ndim} {index.metric_kind}, "
                f"meta says {meta.count} x {meta.dim} {meta.metric}",
                **where,
            )
        # usearch declares this property's setter apart from its getter, which mypy reads as read-only.
        index.expansion_search = expansion_search or meta.params.expansion_search  # type: ignore[misc]
        loaded = cls(index, ids, meta)
        if meta.count <= exact_max_vectors:
            loaded.scan_exactly()
        return loaded


def build_index(
    ids: npt.ArrayLike,
    vectors: npt.ArrayLike,
    *,
    metric: Metric = "ip",
    params: HnswParams | None = None,
    threads: int | None = None,
    recall_k: int = 100,
    recall_queries: int = 200,
    seed: int = 0,
    table: str = "",
    table_version: str = "",
) -> AnnIndex:
    """Build an index over `vectors` [n, dim] (row i is item `ids[i]`, ids unique) and measure it.

    `threads`: library threads for the build (None: all cores; an offline tool's choice, never the
    request path's). Recall@`recall_k` against `exact_search` is measured on `recall_queries` rows of
    the table itself, drawn with `seed`, and recorded in the meta (0 queries: not measured). `table` and
    `table_version` name the source in the meta. ValueError for duplicate or non-integer ids, vectors
    that are not finite [n, dim >= 1], an unknown metric, or zero vectors under 'cos'.
    """
    _check_metric(metric)
    if table:
        _check_name("table", table)
    if table_version:
        _check_name("version", table_version)
    params = params or HnswParams()
    sorted_ids, ordered = sorted_table(ids, vectors)
    if ordered.dtype.kind not in "fiu":
        raise ValueError(f"vectors must be numbers, got {ordered.dtype}")
    with np.errstate(over="ignore"):
        matrix = np.ascontiguousarray(ordered, dtype=np.float32)
    if not np.isfinite(matrix).all():
        raise ValueError("vectors hold values that are not finite as float32")
    if metric == "cos":
        if len(matrix) and not np.linalg.norm(matrix, axis=1).all():
            raise ValueError("metric 'cos' is undefined for zero vectors; drop them or use 'ip'")
        matrix = _unit(matrix)
    stored, norm_sq = matrix, None
    if metric == "ip":
        norms_sq = np.einsum("ij,ij->i", matrix, matrix)
        norm_sq = float(norms_sq.max()) if len(matrix) else 0.0
        lift = np.sqrt(np.maximum(np.float32(norm_sq) - norms_sq, 0))
        stored = np.ascontiguousarray(np.hstack([matrix, lift[:, None]]), dtype=np.float32)

    started = time.perf_counter()
    index = Index(
        ndim=stored.shape[1],
        metric=_METRIC_KIND[metric],
        dtype="f32",
        connectivity=params.connectivity,
        expansion_add=params.expansion_add,
        expansion_search=params.expansion_search,
    )
    if len(matrix):
        index.add(np.arange(len(stored), dtype=np.uint64), stored, threads=threads or 0)
    meta = IndexMeta(
        library=LIBRARY,
        library_version=usearch.__version__,
        metric=metric,
        dim=matrix.shape[1],
        count=len(matrix),
        params=params,
        ip_norm_sq=norm_sq,
        created_at=datetime.now(UTC).isoformat(),
        build_seconds=round(time.perf_counter() - started, 3),
        table=table,
        table_version=table_version,
    )
    built = AnnIndex(index, sorted_ids, meta)
    report = _measure_recall(built, sorted_ids, matrix, recall_k, recall_queries, seed, threads or 0)
    built.meta = meta.model_copy(update={"recall": report})
    return built


def _measure_recall(
    index: AnnIndex,
    ids: npt.NDArray[np.int64],
    matrix: npt.NDArray[np.float32],
    k: int,
    queries: int,
    seed: int,
    threads: int,
) -> RecallReport | None:
    k, queries = min(_check_k(k), len(matrix)), min(queries, len(matrix))
    if queries <= 0 or k == 0:
        return None
    rows = np.sort(np.random.default_rng(seed).choice(len(matrix), size=queries, replace=False))
    sample = matrix[rows]
    found = index.search(sample, k, threads=threads)
    exact = exact_search(ids, matrix, sample, k, metric=index.meta.metric)
    return RecallReport(k=k, queries=queries, value=round(recall(found, exact), 5))


# -- artifacts on disk --------------------------------------------------------------------------------------


def index_dir(index_root: Path, table: str, version: str) -> Path:
    """Where the index of `table`@`version` lives under `index_root`. ValueError for unsafe names."""
    return Path(index_root) / _check_name("table", table) / _check_name("version", version)


def read_meta(directory: Path) -> IndexMeta:
    """meta.json of the index in `directory`: `TableNotFound` when absent, `CorruptValue` when unreadable."""
    path = Path(directory) / "meta.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TableNotFound(f"no ANN index in {directory}") from None
    except OSError as error:
        raise CorruptValue(f"index {directory}: cannot read meta.json: {error}") from error
    try:
        return IndexMeta.model_validate_json(text)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in error.errors())
        raise CorruptValue(f"index {directory}: bad meta.json: {problems}") from None


def list_indexes(index_root: Path, table: str | None = None) -> list[tuple[str, str]]:
    """(table, table_version) of every complete index under `index_root` (of `table` only if given),
    sorted; [] when the root does not exist. Default version names sort by time, oldest first."""
    root = Path(index_root)
    tables = [root / table] if table is not None else (sorted(root.iterdir()) if root.is_dir() else [])
    found = []
    for table_dir in tables:
        if not table_dir.is_dir() or not _NAME.fullmatch(table_dir.name):
            continue
        for version_dir in sorted(table_dir.iterdir()):
            if _NAME.fullmatch(version_dir.name) and (version_dir / "meta.json").is_file():
                found.append((table_dir.name, version_dir.name))
    return found


def latest_index(index_root: Path, table: str) -> str | None:
    """The newest table version of `table` that has an index (by name order), or None."""
    versions = [version for _, version in list_indexes(index_root, table)]
    return versions[-1] if versions else None


# -- building from the embedded store ------------------------------------------------------------------------


def read_embedded_table(
    store_root: Path, table: str, version: str | None = None
) -> tuple[str, npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(version, ids, float32 vectors) of a table version in an embedded store (`kvstore.embedded` layout).

    `version` defaults to the current one. The version is verified in full (shapes, order, checksum)
    before it is used: an index must not be built from a damaged table. Raises `TableNotFound` for a
    missing table or version, `CorruptValue` for a damaged one. Reads every byte: offline use only.
    """
    _check_name("table", table)
    if version is None:
        version = embedded.current_version(store_root, table)
        if version is None:
            known = embedded.list_versions(store_root, table)
            raise TableNotFound(f"table {table!r} has no current version; versions: {known}", table=table)
    _check_name("version", version)
    info = embedded.verify_version(store_root, table, version)
    directory = Path(store_root) / table / "versions" / version  # kvstore.embedded's documented layout
    ids = np.load(directory / "ids.npy")
    vectors = np.load(directory / "vectors.npy").astype(np.float32, copy=False)
    if vectors.shape != (info.count, info.dim):
        raise CorruptValue(f"version {version!r}: vectors {vectors.shape} changed while read", table=table)
    return version, ids, vectors


def build_from_embedded(
    store_root: Path,
    table: str,
    version: str | None = None,
    *,
    metric: Metric = "ip",
    params: HnswParams | None = None,
    threads: int | None = None,
    recall_k: int = 100,
    recall_queries: int = 200,
    seed: int = 0,
) -> AnnIndex:
    """`build_index` over a version (default: the current one) of an embedded store's table, read with
    `read_embedded_table`; the meta names the table and the version."""
    resolved, ids, vectors = read_embedded_table(store_root, table, version)
    return build_index(
        ids,
        vectors,
        metric=metric,
        params=params,
        threads=threads,
        recall_k=recall_k,
        recall_queries=recall_queries,
        seed=seed,
        table=table,
        table_version=resolved,
    )


# -- searching off the event loop -----------------------------------------------------------------------------


class SearchableIndex(Protocol):
    """What `AnnSearcher` needs of an index (an `AnnIndex`, or a test double). `count` is read only by a
    searcher that searches small indexes inline."""

    @property
    def count(self) -> int: ...

    def search(self, queries: npt.ArrayLike, k: int) -> Neighbours: ...


class AnnSearcher:
    """Async nearest-neighbour search over the indexes under `index_root`, on ONE dedicated thread.

    `search(table, version, ...)` searches the index built from exactly that table version, loading it
    on first use (memory-mapped, on the worker thread, never on the loop) and keeping up to
    `versions_per_table` loaded per table, least recently used evicted (an evicted one is loaded again
    on demand). One thread, and one library thread per search, so ANN work never takes more than one
    core from the request path.

    Admission: a search is in flight from `search` until the worker finishes it (or drops it unstarted).
    With `1 + max_pending` in flight, `search` raises `SearchOverloaded` (a `StoreUnavailable`) at once.
    `timeout_s` bounds queue wait + load + search: past it, `StoreTimeout`. A timed-out or cancelled
    search that has not started never runs; one that has started keeps the thread until it ends (a
    thread cannot be interrupted), and keeps its slot until then so the bound stays honest.

    Small indexes inline: an index of at most `inline_max_vectors` vectors is searched on the caller's
    thread (the event loop) once loaded; loading always happens on the worker. A search of the demo's job
    index (15,000 x 16, k = 600) takes ~0.2 ms, less than what the hand-off to a thread costs a request
    whose loop is busy with Python (the worker waits for the GIL to hand its result back; see
    `engines._local.RunOn`). 0 (the default here): always the thread. An index of at most
    `exact_max_vectors` vectors is loaded to be searched exactly (`AnnIndex.scan_exactly`); 0: never.

    The constructor does no I/O and starts no thread; `close()` rejects later calls.
    """

    def __init__(
        self,
        index_root: Path,
        *,
        name: str = "ann",
        max_pending: int = 32,
        versions_per_table: int = 2,
        mmap: bool = True,
        inline_max_vectors: int = 0,
        exact_max_vectors: int = 0,
    ) -> None:
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending}")
        if inline_max_vectors < 0:
            raise ValueError(f"inline_max_vectors must be >= 0, got {inline_max_vectors}")
        if exact_max_vectors < 0:
            raise ValueError(f"exact_max_vectors must be >= 0, got {exact_max_vectors}")
        if versions_per_table < 1:
            raise ValueError(f"versions_per_table must be >= 1, got {versions_per_table}")
        self.name = name
        self._root = Path(index_root)
        self._max_pending = max_pending
        self._versions_per_table = versions_per_table
        self._mmap = mmap
        self._inline_max_vectors = inline_max_vectors
        self._exact_max_vectors = exact_max_vectors
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"quasar-{name}")
        # Taken on the loop (admission, add) and on the worker (release, cache): a real lock.
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closed = False
        self._loaded: dict[str, OrderedDict[str, SearchableIndex]] = {}  # table -> version -> index, LRU first

    @property
    def in_flight(self) -> int:
        """Searches admitted and not finished (running or queued)."""
        return self._in_flight

    def loaded(self, table: str) -> list[str]:
        """Versions of `table` loaded now, least recently used first."""
        with self._lock:
            return list(self._loaded.get(table, ()))

    def add(self, table: str, version: str, index: SearchableIndex) -> None:
        """Serve `index` for `table`@`version` (built in process, e.g. from another store's rows);
        evicted like a loaded one, after which that version is looked for under `index_root`."""
        with self._lock:
            self._remember(table, version, index)

    async def preload(self, table: str, version: str, *, timeout_s: float | None = None) -> None:
        """Load `table`@`version` before traffic needs it (e.g. before readiness turns on)."""
        await self._run(lambda: self._index(table, version), table, version, timeout_s)

    async def search(
        self,
        table: str,
        version: str,
        queries: npt.ArrayLike,
        k: int,
        *,
        timeout_s: float | None = None,
    ) -> Neighbours:
        """The k nearest items of each query [m, dim] in the index of `table`@`version` (see `Neighbours`).

        Raises `TableNotFound` (no index for that version), `CorruptValue`, `SearchOverloaded`,
        `StoreTimeout` (past `timeout_s`, the caller's remaining budget; None: no own limit), and
        ValueError for bad queries or k.
        """
        k = _check_k(k)
        if self._inline_max_vectors == 0:
            return await self._run(lambda: self._index(table, version).search(queries, k), table, version, timeout_s)
        index = self._cached(table, version)
        if index is None:  # loaded on the worker, never on the loop
            index = await self._run(lambda: self._index(table, version), table, version, timeout_s)
        if index.count <= self._inline_max_vectors:
            if self._closed:
                raise StoreUnavailable("ANN searcher is closed", store=self.name, table=table)
            return index.search(queries, k)
        loaded = index
        return await self._run(lambda: loaded.search(queries, k), table, version, timeout_s)

    async def close(self) -> None:
        """Reject new searches and drop queued ones; a running one finishes in its thread."""
        with self._lock:
            self._closed = True
            self._loaded.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[[], T], table: str, version: str, timeout_s: float | None) -> T:
        if timeout_s is not None and timeout_s <= 0:
            raise StoreTimeout(f"no time left to search {table}@{version}", store=self.name, table=table)
        with self._lock:
            if self._closed:
                raise StoreUnavailable("ANN searcher is closed", store=self.name, table=table)
            if self._in_flight >= 1 + self._max_pending:
                raise SearchOverloaded(
                    f"{self._in_flight} ANN searches in flight (at most {self._max_pending} may wait)",
                    store=self.name,
                    table=table,
                )
            self._in_flight += 1
        try:
            future = self._executor.submit(fn)
        except BaseException:
            self._release(None)
            raise
        # Runs on the worker when fn returns, or at once when a queued call is cancelled.
        future.add_done_callback(self._release)
        timer = asyncio.timeout(timeout_s)
        try:
            async with timer:
                # wrap_future cancels `future` when this await is cancelled: a queued search never runs.
                return await asyncio.wrap_future(future)
        except TimeoutError:
            if not timer.expired():
                raise
            raise StoreTimeout(
                f"ANN search of {table}@{version} did not finish within {(timeout_s or 0.0) * 1e3:.1f} ms",
                store=self.name,
                table=table,
            ) from None

    def _release(self, _future: concurrent.futures.Future[Any] | None) -> None:
        with self._lock:
            self._in_flight -= 1

    def _cached(self, table: str, version: str) -> SearchableIndex | None:
        with self._lock:
            versions = self._loaded.get(table)
            if versions is None or version not in versions:
                return None
            versions.move_to_end(version)
            return versions[version]

    def _index(self, table: str, version: str) -> SearchableIndex:
        """The index of `table`@`version`, loaded if needed. Runs on the worker thread only, so one
        version is never loaded twice at once."""
        cached = self._cached(table, version)
        if cached is not None:
            return cached
        directory = index_dir(self._root, table, version)
        try:
            index = AnnIndex.load(directory, mmap=self._mmap, exact_max_vectors=self._exact_max_vectors)
        except TableNotFound:
            known = [v for _, v in list_indexes(self._root, table)]
            raise TableNotFound(
                f"no ANN index for version {version!r}; indexed versions: {known}", store=self.name, table=table
            ) from None
        except CorruptValue as error:
            raise CorruptValue(str(error.args[0]), store=self.name, table=table) from error
        with self._lock:
            self._remember(table, version, index)
        return index

    def _remember(self, table: str, version: str, index: SearchableIndex) -> None:
        versions = self._loaded.setdefault(table, OrderedDict())
        versions[version] = index
        versions.move_to_end(version)
        while len(versions) > self._versions_per_table:
            versions.popitem(last=False)


# -- helpers -----------------------------------------------------------------------------------------------


def _stored_dim(metric: Metric, dim: int) -> int:
    return dim + 1 if metric == "ip" else dim


def _check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{kind} name {name!r} must match {_NAME.pattern}")
    return name


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _as_queries(queries: npt.ArrayLike, dim: int) -> npt.NDArray[np.float32]:
    """`queries` as a C-contiguous float32 [m, dim] array; ValueError for anything else."""
    array = np.asarray(queries)
    if array.ndim != 2 or array.shape[1] != dim or (array.size and array.dtype.kind not in "fiu"):
        raise ValueError(f"queries must be a [m, {dim}] array of numbers, got {array.dtype} {array.shape}")
    with np.errstate(over="ignore"):
        query = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(query).all():
        raise ValueError("queries hold values that are not finite as float32")
    return query


def _unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, np.float32(1e-30)), dtype=np.float32)


__all__ = [
    "METRICS",
    "AnnIndex",
    "AnnSearcher",
    "HnswParams",
    "IndexMeta",
    "Metric",
    "Neighbours",
    "RecallReport",
    "SearchOverloaded",
    "SearchableIndex",
    "build_from_embedded",
    "build_index",
    "exact_search",
    "index_dir",
    "latest_index",
    "list_indexes",
    "read_embedded_table",
    "read_meta",
    "recall",
]
