"""Approximate nearest-neighbour libraries for the `ann` candidate source: faiss-cpu against usearch, in one run.

Usage: python benchmarks/ann_indexes.py [--rows 100000] [--dim 16] [--clusters 40] [--queries 300] [--seed 7]

The table is shaped like the demo's item topics (`quasar.demo.world`): L2-normalised vectors scattered
around `--clusters` topic centres; queries are shaped like member topics (a main centre, a bit of a second
one, noise), so neighbours come from dense clusters, the hard case for a graph index. Metric: inner product.

For each method it prints the build time (all cores, then one), the on-disk size, the load time
(memory-mapped where the library can), the latency of ONE query on ONE thread for k = 100, 300, 600
(p50 / p99 over `--queries` queries, interleaved so drift hits all methods alike) and recall@k against exact
search (the share of the true top-k ids found, averaged over the queries; ties at the k-th score counted as
hits). Exact search (numpy, and faiss's flat index) is measured too, as the floor an index has to beat
(numpy's matmul may use its BLAS threads: its "1 thread" is the caller's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
from usearch.index import Index as UsearchIndex

from kvstore.ann import AnnIndex, HnswParams, build_index

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
KS = (100, 300, 600)
Search = Callable[[F32, int], I64]  # one query [1, dim], k -> row positions [k] (-1 padded)


def normalise(x: npt.NDArray[np.float64]) -> F32:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), dtype=np.float32)


def clustered(rows: int, dim: int, clusters: int, queries: int, seed: int) -> tuple[F32, F32]:
    """(table [rows, dim], queries [queries, dim]), both L2-normalised, like the demo's topics."""
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((clusters, dim))).astype(np.float64)
    share = rng.dirichlet(np.full(clusters, 3.0))
    item_cluster = rng.choice(clusters, size=rows, p=share)
    table = normalise(centres[item_cluster] + rng.standard_normal((rows, dim)) * 0.15)
    main, second = rng.choice(clusters, size=queries, p=share), rng.integers(0, clusters, queries)
    query = normalise(centres[main] + 0.35 * centres[second] + rng.standard_normal((queries, dim)) * 0.12)
    return table, query


def exact_top(table: F32, queries: F32, k: int) -> tuple[I64, F32]:
    """Exact top-k row positions by inner product and the k-th best score of each query."""
    scores = queries @ table.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(scores, top, axis=1).min(axis=1)
    return top.astype(np.int64), kth


def recall(found: list[I64], table: F32, queries: F32, k: int) -> float:
    """Mean share of the exact top-k found; a row scoring at least the k-th best counts (ties)."""
    _, kth = exact_top(table, queries, k)
    hits = []
    for q, rows in enumerate(found):
        rows = rows[rows >= 0]
        hits.append(np.count_nonzero(table[rows] @ queries[q] >= kth[q] - 1e-6) / k)
    return float(np.mean(hits))


@dataclass
class Method:
    name: str
    build_s: dict[str, float]  # 'all cores' / '1 thread' -> seconds
    size_bytes: int
    load_s: float
    search: Search


def build_faiss_hnsw(table: F32, directory: Path, m: int, ef_construction: int, ef_search: int) -> list[Method]:
    times = {}
    index = None
    for label, threads in (("all cores", os.cpu_count() or 1), ("1 thread", 1)):
        faiss.omp_set_num_threads(threads)
        started = time.perf_counter()
        index = faiss.IndexHNSWFlat(table.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(table)
        times[label] = time.perf_counter() - started
    assert index is not None
    path = directory / "faiss.hnsw"
    faiss.write_index(index, str(path))
    started = time.perf_counter()
    # faiss memory-maps only some index types (IO_FLAG_MMAP); HNSW is read into memory.
    loaded = faiss.read_index(str(path))
    load_s = time.perf_counter() - started
    loaded.hnsw.efSearch = ef_search
    faiss.omp_set_num_threads(1)

    def search(query: F32, k: int) -> I64:
        _, rows = loaded.search(query, k)
        return np.asarray(rows[0], dtype=np.int64)

    def search_deeper(query: F32, k: int) -> I64:
        # faiss searches `efSearch` deep whatever k is; usearch goes max(ef, k) deep. This is the fair match.
        _, rows = loaded.search(query, k, params=faiss.SearchParametersHNSW(efSearch=max(ef_search, k)))
        return np.asarray(rows[0], dtype=np.int64)

    name = f"faiss HNSWFlat M={m} efC={ef_construction}"
    size = path.stat().st_size
    return [
        Method(f"{name} ef={ef_search}", times, size, load_s, search),
        Method(f"{name} ef=max({ef_search}, k)", times, size, load_s, search_deeper),
    ]


def build_faiss_flat(table: F32, directory: Path) -> Method:
    started = time.perf_counter()
    index = faiss.IndexFlatIP(table.shape[1])
    index.add(table)
    build_s = time.perf_counter() - started
    path = directory / "faiss.flat"
    faiss.write_index(index, str(path))
    started = time.perf_counter()
    loaded = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    load_s = time.perf_counter() - started

    def search(query: F32, k: int) -> I64:
        _, rows = loaded.search(query, k)
        return np.asarray(rows[0], dtype=np.int64)

    return Method("faiss FlatIP (exact)", {"all cores": build_s}, path.stat().st_size, load_s, search)


def build_usearch(table: F32, directory: Path, m: int, ef_construction: int, ef_search: int) -> Method:
    times = {}
    keys = np.arange(len(table), dtype=np.uint64)
    for label, threads in (("all cores", 0), ("1 thread", 1)):
        started = time.perf_counter()
        index = UsearchIndex(
            ndim=table.shape[1],
            metric="ip",
            dtype="f32",
            connectivity=m,
            expansion_add=ef_construction,
            expansion_search=ef_search,
        )
        index.add(keys, table, threads=threads)
        times[label] = time.perf_counter() - started
    path = directory / "usearch.index"
    index.save(str(path))
    started = time.perf_counter()
    loaded = UsearchIndex.restore(str(path), view=True)
    load_s = time.perf_counter() - started
    assert loaded is not None
    loaded.expansion_search = ef_search

    def search(query: F32, k: int) -> I64:
        matches = loaded.search(query[0], k, threads=1)
        return np.asarray(matches.keys, dtype=np.int64)

    return Method(
        f"usearch HNSW M={m} efC={ef_construction} ef={ef_search}", times, path.stat().st_size, load_s, search
    )


def build_kvstore_ann(table: F32, directory: Path, m: int, ef_construction: int, ef_search: int) -> Method:
    """The module itself: usearch with 'ip' reduced to L2 (rows [x, sqrt(M - |x|^2)]), saved and memory-mapped."""
    params = HnswParams(connectivity=m, expansion_add=ef_construction, expansion_search=ef_search)
    ids = np.arange(len(table), dtype=np.int64)
    started = time.perf_counter()
    built = build_index(ids, table, params=params, recall_queries=0)
    build_s = time.perf_counter() - started
    built.save(directory / "kvstore-ann")
    started = time.perf_counter()
    loaded = AnnIndex.load(directory / "kvstore-ann", mmap=True)
    load_s = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (directory / "kvstore-ann").iterdir())

    def search(query: F32, k: int) -> I64:
        return loaded.search(query, k).ids[0]  # ids are row positions here

    name = f"kvstore.ann (usearch, ip as L2 +1 dim) M={m} efC={ef_construction} ef={ef_search}"
    return Method(name, {"all cores": build_s}, size, load_s, search)


def numpy_exact(table: F32) -> Method:
    def search(query: F32, k: int) -> I64:
        scores = table @ query[0]
        top = np.argpartition(-scores, k - 1)[:k]
        return top[np.argsort(-scores[top], kind="stable")].astype(np.int64)

    return Method("numpy exact (matmul + argpartition)", {}, table.nbytes, 0.0, search)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--clusters", type=int, default=40)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--spread-norms", action="store_true", help="scale rows by lognormal(0, 0.5), like trained embeddings"
    )
    parser.add_argument("--m", type=int, default=16, help="HNSW links per node, both libraries")
    parser.add_argument("--ef-construction", type=int, default=128)
    parser.add_argument("--ef-search", type=int, default=64, help="search depth (usearch goes max(ef, k) deep)")
    args = parser.parse_args()

    table, queries = clustered(args.rows, args.dim, args.clusters, args.queries, args.seed)
    if args.spread_norms:
        table = table * np.random.default_rng(args.seed).lognormal(0.0, 0.5, len(table)).astype(np.float32)[:, None]
    print(
        f"table {args.rows:,} x {args.dim} ({args.clusters} clusters), {args.queries} queries, inner product; "
        f"faiss {faiss.__version__}, usearch {__import__('usearch').__version__}, {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        methods = [
            *build_faiss_hnsw(table, directory, args.m, args.ef_construction, args.ef_search),
            build_usearch(table, directory, args.m, args.ef_construction, args.ef_search),
            build_faiss_flat(table, directory),
            build_kvstore_ann(table, directory, args.m, args.ef_construction, args.ef_search),
            numpy_exact(table),
        ]
        latencies: dict[tuple[str, int], list[float]] = {(m.name, k): [] for m in methods for k in KS}
        found: dict[tuple[str, int], list[I64]] = {(m.name, k): [] for m in methods for k in KS}
        for method in methods:  # warm-up: first-touch page faults of memory-mapped files, lazy allocations
            for k in KS:
                for q in range(min(20, len(queries))):
                    method.search(queries[q : q + 1], k)
        for q in range(len(queries)):  # interleave methods and k so drift hits all alike
            query = queries[q : q + 1]
            for offset in range(len(methods)):
                method = methods[(q + offset) % len(methods)]
                for k in KS:
                    started = time.perf_counter()
                    rows = method.search(query, k)
                    latencies[(method.name, k)].append(time.perf_counter() - started)
                    found[(method.name, k)].append(rows)

        for method in methods:
            builds = ", ".join(f"{label} {s:.2f} s" for label, s in method.build_s.items()) or "-"
            size_mib, load_ms = method.size_bytes / 2**20, method.load_s * 1e3
            print(f"\n{method.name}\n  build: {builds}; size {size_mib:.1f} MiB; load {load_ms:.1f} ms")
            for k in KS:
                times = sorted(latencies[(method.name, k)])
                p50, p99 = statistics.median(times), times[int(0.99 * (len(times) - 1))]
                r = recall(found[(method.name, k)], table, queries, k)
                latency = f"p50 {p50 * 1e3:6.3f} ms  p99 {p99 * 1e3:6.3f} ms"
                print(f"  k={k:<4} 1 query, 1 thread: {latency}   recall@{k} {r:.4f}")


if __name__ == "__main__":
    main()
