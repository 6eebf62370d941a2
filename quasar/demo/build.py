"""`build_world`: the demo world, its embedding tables and its models, from a seed, in one call.

The world is a deployment directory (`gateway.deployment`) holding only data and declarations:

    store/                       embedded store: every feature table (`quasar.demo.tables`) and the learned
                                 embeddings (member, item, author, hashtag)
    indexes/job_topics/<v>/      the ANN index of the jobs source (`kvstore.ann`)
    features/feed.yaml           entities, feature views and derived features (`quasar.demo.feed_product`)
    models/first_pass.ubj        XGBoost P(click), and first_pass.signature.yaml
    models/ranker.onnx           the ranker's dense part (two-stage mode), and feed_ranker.signature.yaml
    models/ranker_whole.onnx     the whole ranker, embedding tables inside, and feed_ranker_whole.signature.yaml
    models/ranker_weights.npz    every ranker weight, for other exporters (names: ranker.export_weights)
    workflows/feed.yaml          the feed workflow
    engines/feed.yaml            engines and routes
    world.json                   WorldManifest, written last: its presence marks a complete build

Training assembles its inputs from the declarations through `features.InputPlan` over the same tables
it writes to the store (an `ArrayReader`), so serving and training build model inputs with one code path.

Everything is a function of the seed and the sizes: two builds with the same arguments differ only in
timings (`build_seconds`, training seconds). Model and table versions are content digests, so a
rebuild of the same world names the same versions (and reuses identical store versions).
Torch and XGBoost are imported only while building, so `load_manifest` stays light.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from quasar.demo.corpus import Corpus
from quasar.demo.layout import (
    DENSE_FEATURES,
    EMBEDDING_TABLES,
    FIRST_PASS_FEATURES,
    FIRST_PASS_INPUT,
    FIRST_PASS_OUTPUT,
    MEMBER_FEATURES,
    OBJECTIVES,
    RANKER_INPUT,
    RANKER_OUTPUT,
    first_pass_features_pairs,
    hashtag_ids,
    ranker_input_dim,
)
from quasar.demo.world import WorldSpec, generate_corpus

# 2: the world is a deployment directory (declarations, no corpus); 3: the jobs product; 4: compiled first passes
MANIFEST_FORMAT = 4
MANIFEST_FILE = "world.json"
MEMBER_FEATURES_TABLE = "member_features"
IMPRESSIONS_PER_MEMBER = 30
HELDOUT_SHARE = 0.2
PARITY_ROWS = 256
RELEASE_STATS_MEMBERS = 300  # ~180k served ranker rows: enough for sketches of k = 4000
PARITY_TOLERANCE = 1e-5

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


class WorldBuildError(RuntimeError):
    """The build produced something inconsistent (e.g. an export that disagrees with its model)."""


@dataclass(frozen=True)
class TableEntry:
    """One store table: ids first_id .. first_id + count - 1, each a `dim`-wide vector."""

    version: str
    dim: int
    dtype: str
    first_id: int
    count: int


@dataclass(frozen=True)
class ModelFile:
    path: str  # relative to the world directory
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class WorldManifest:
    """What a world directory holds and how it was made (`world.json`)."""

    format: int
    seed: int
    members: int
    items: int
    hashtags: int
    impressions: int
    topic_dim: int
    embedding_dim: int
    objectives: tuple[str, ...]
    first_pass_features: tuple[str, ...]
    member_features: tuple[str, ...]
    dense_features: tuple[str, ...]
    embedding_tables: tuple[str, ...]
    first_pass_input: str
    first_pass_output: str
    ranker_input: str
    ranker_output: str
    ranker_input_dim: int
    ranker_version: str
    tables: dict[str, TableEntry]  # table -> its current version after the build
    models: dict[str, ModelFile]  # 'first_pass', 'ranker', 'ranker_whole', 'ranker_weights'
    training: dict[str, Any]  # 'first_pass', 'ranker' reports and 'parity' (max abs diffs)
    build_seconds: float

    def model_path(self, world_dir: Path, name: str) -> Path:
        return world_dir / self.models[name].path

    def same_world(self, spec: WorldSpec) -> bool:
        return (self.format, self.seed, self.members, self.items, self.hashtags) == (
            MANIFEST_FORMAT,
            spec.seed,
            spec.members,
            spec.items,
            spec.hashtags,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> WorldManifest:
        raw = json.loads(text)
        names = {f.name for f in fields(cls)}
        if set(raw) != names:
            raise ValueError(
                f"manifest fields differ: missing {sorted(names - set(raw))}, extra {sorted(set(raw) - names)}"
            )
        for name in ("objectives", "first_pass_features", "member_features", "dense_features", "embedding_tables"):
            raw[name] = tuple(raw[name])
        raw["tables"] = {k: TableEntry(**v) for k, v in raw["tables"].items()}
        raw["models"] = {k: ModelFile(**v) for k, v in raw["models"].items()}
        return cls(**raw)


def load_manifest(out_dir: Path) -> WorldManifest:
    """The manifest of a built world; FileNotFoundError naming the build command when there is none."""
    path = Path(out_dir) / MANIFEST_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the world first (`quasar world build --out {out_dir}`)")
    try:
        manifest = WorldManifest.from_json(path.read_text())
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path} is not a world manifest of format {MANIFEST_FORMAT}: {error}") from error
    if manifest.format != MANIFEST_FORMAT:
        raise ValueError(f"{path}: manifest format {manifest.format}, expected {MANIFEST_FORMAT}: rebuild the world")
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_file(out_dir: Path, path: Path) -> ModelFile:
    return ModelFile(path=str(path.relative_to(out_dir)), sha256=_sha256(path), size_bytes=path.stat().st_size)


def _complete(out_dir: Path, spec: WorldSpec, impressions: int) -> WorldManifest | None:
    """The manifest when `out_dir` holds this very world, complete (models present, tables current)."""
    from kvstore.embedded import current_version

    try:
        manifest = load_manifest(out_dir)
    except (FileNotFoundError, ValueError):
        return None
    if not manifest.same_world(spec) or manifest.impressions != impressions:
        return None
    if not all((out_dir / d).is_dir() for d in ("features", "workflows", "engines", "indexes")):
        return None
    if not all((out_dir / m.path).is_file() for m in manifest.models.values()):
        return None
    if any(current_version(out_dir / "store", t) != entry.version for t, entry in manifest.tables.items()):
        return None
    return manifest


class _Stages:
    """One console line per stage with its timing; a progress bar for the long ones."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        started = time.perf_counter()
        with self.console.status(f"{name} …"):
            yield
        elapsed = time.perf_counter() - started
        self.seconds[name] = elapsed
        self.console.print(f"[green]✓[/green] {name:<22} {elapsed:6.2f} s  {detail}")

    @contextmanager
    def bar(self, name: str) -> Iterator[Callable[[int, int], None]]:
        started = time.perf_counter()
        progress = Progress(
            TextColumn(f"  {name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=self.console.quiet or not self.console.is_terminal,
        )
        task = progress.add_task(name, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        with progress:
            yield update
        elapsed = time.perf_counter() - started
        self.seconds[name] = elapsed
        self.console.print(f"[green]✓[/green] {name:<22} {elapsed:6.2f} s")


def _digest_version(seed: int, arrays: Mapping[str, npt.NDArray[Any]]) -> str:
    """A version id that changes whenever a value does: the seed and a digest of every array."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return f"s{seed}-{digest.hexdigest()[:12]}"


def _json_values(value: dict[str, Any]) -> dict[str, Any]:
    """`value` as it reads back from JSON (tuples become lists), so a loaded manifest equals the built one."""
    loaded: dict[str, Any] = json.loads(json.dumps(value))
    return loaded


def _split(n: int, seed: int) -> tuple[I64, I64]:
    order = np.random.default_rng([seed, 4]).permutation(n).astype(np.int64)
    cut = round(n * (1 - HELDOUT_SHARE))
    return np.sort(order[:cut]), np.sort(order[cut:])


def _reference_time(clock_s: float) -> int:
    """The world's "now" for item creation times: the build day's midnight UTC, so two builds of one world
    on one day are identical (table versions are content digests). Serving computes ages against the
    wall clock: an item is as old as the world says at build, and ages from there."""
    return int(clock_s // 86400 * 86400)


def _dump(path: Path, document: Mapping[str, Any], header: str) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {header}\n" + yaml.safe_dump(dict(document), sort_keys=False, width=120))


def _write_table(store_dir: Path, table: str, ids: I64, rows: np.ndarray, seed: int) -> TableEntry:
    """Write a table as a content-named version and make it current (an identical version is reused)."""
    from kvstore.embedded import list_versions, set_current, write_version

    dtype = "int64" if rows.dtype.kind in "iu" else "float32"
    rows = np.ascontiguousarray(rows, dtype=np.int64 if dtype == "int64" else np.float32)
    version = _digest_version(seed, {"ids": ids, "vectors": rows})
    if version not in list_versions(store_dir, table):
        write_version(store_dir, table, ids, rows, dtype=dtype, version=version)
    set_current(store_dir, table, version)
    return TableEntry(version=version, dim=int(rows.shape[1]), dtype=dtype, first_id=int(ids[0]), count=len(ids))


def _embedding_tables(corpus: Corpus, weights: Mapping[str, F32]) -> dict[str, tuple[I64, F32]]:
    members = np.arange(1, corpus.n_members + 1, dtype=np.int64)
    items = np.arange(1, corpus.n_items + 1, dtype=np.int64)
    return {
        "member": (members, weights["embedding_member"][members]),
        "item": (items, weights["embedding_item"][items]),
        "author": (members, weights["embedding_author"][members]),
        "hashtag": (np.arange(corpus.n_hashtags, dtype=np.int64), weights["embedding_hashtag"]),
    }


def _assemble(
    plan: Any, reader: Any, tensors: Any, member_ids: I64, item_ids: I64, now_s: int, fp_score: F32 | None = None
) -> dict[str, npt.NDArray[Any]]:
    """A signature's inputs for (member, item) pairs, through the serving assembly code."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    columns = None if fp_score is None else {"first_pass_score": fp_score}
    coroutine = plan.frame(reader, member_ids=member_ids, candidate_ids=item_ids, columns=columns, now_s=float(now_s))
    # A loop of its own on a thread of its own: the build may be called from inside a running loop (tests).
    with ThreadPoolExecutor(1) as thread:
        frame = thread.submit(asyncio.run, coroutine).result()
    return plan.tensors(frame, tensors)  # type: ignore[no-any-return]


def build_world(
    out_dir: Path,
    *,
    seed: int = 7,
    members: int = 10_000,
    items: int = 100_000,
    hashtags: int = 2_000,
    impressions: int | None = None,
    force: bool = False,
    progress: bool = True,
    clock: Callable[[], float] = time.time,
) -> WorldManifest:
    """Build (or reuse) the world in `out_dir`; returns its manifest.

    A complete world with the same seed and sizes (models present, its table versions current) is
    reused unless `force`. Raises WorldBuildError when an export disagrees with the trained model (parity
    above 1e-5), when the declared assembly disagrees with the world's own feature layout, or when the
    two-stage inputs differ from the whole model's. `impressions` defaults to 30 per member.
    """
    from features import ArrayReader, InputPlan, load_registry, load_signatures
    from kvstore.ann import build_from_embedded, index_dir
    from quasar.demo import feed_product as product
    from quasar.demo import first_pass, onnx_export, ranker
    from quasar.demo.interactions import generate_interactions
    from quasar.demo.release import write_release, write_served_stats
    from quasar.demo.tables import feed_tables

    out_dir = Path(out_dir)
    spec = WorldSpec(seed=seed, members=members, items=items, hashtags=hashtags)
    console = Console(quiet=not progress, highlight=False, soft_wrap=True)
    n_impressions = impressions if impressions is not None else IMPRESSIONS_PER_MEMBER * members
    existing = None if force else _complete(out_dir, spec, n_impressions)
    if existing is not None:
        console.print(f"world in {out_dir} is up to date (seed {seed}); use force to rebuild")
        return existing

    started = time.perf_counter()
    stages = _Stages(console)
    console.print(
        f"building world in {out_dir}: seed {seed}, {members:,} members, {items:,} items, {hashtags:,} hashtags"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    models_dir = out_dir / "models"
    for stale in (out_dir / "corpus", models_dir, out_dir / "features", out_dir / "workflows", out_dir / "engines"):
        shutil.rmtree(stale, ignore_errors=True)
    store_dir = out_dir / "store"
    now_s = _reference_time(clock())
    config = ranker.RankerConfig()

    with stages.stage("corpus", f"{members:,} members · {items:,} items"):
        corpus = generate_corpus(spec)
    with stages.stage("feature tables"):
        tables = feed_tables(corpus, reference_time_s=now_s)
        widths = {
            "connections": tables["member_graph"][1].shape[1],
            "follows": tables["member_follows"][1].shape[1],
            "item_hashtags": tables["item_meta"][1].shape[1] - 3,
            "network_feed": tables["network_feed"][1].shape[1],
            "hashtag_feed": tables["hashtag_feed"][1].shape[1],
            "trending": tables["trending"][1].shape[1],
        }
        _dump(
            out_dir / "features" / "feed.yaml",
            product.features_document(embedding_dim=config.embedding_dim, topic_dim=spec.topic_dim, widths=widths),
            "The feed product's features, written by `quasar world build`.",
        )
        for name, document in product.signature_documents().items():
            _dump(models_dir / f"{name}.signature.yaml", document, f"Signature of {name}, written with the model.")
        registry = load_registry(out_dir / "features")
        signatures = load_signatures(models_dir, registry)
        fp_signature, rk_signature = signatures[product.FIRST_PASS_MODEL], signatures[product.RANKER_MODEL]
        whole_signature = signatures[product.WHOLE_MODEL]
        dense_features = [registry.feature(name) for name in product.DENSE_INPUTS]

    with stages.stage("interactions", f"{n_impressions:,} impressions"):
        seen = generate_interactions(corpus, n_impressions, seed=seed)
        train_rows, heldout_rows = _split(len(seen), seed)
        reader = ArrayReader(tables)
        fp_plan = InputPlan(registry, fp_signature.inputs[0].features)
        fp_features = _assemble(fp_plan, reader, fp_signature.inputs, seen.member_id, seen.item_id, now_s)["features"]
        layout = first_pass_features_pairs(corpus, seen.member_id, seen.item_id)
        layout_diff = float(np.max(np.abs(fp_features - layout), initial=0.0))
        if not layout_diff <= 1e-4:
            raise WorldBuildError(f"declared first-pass features differ from the world's layout by {layout_diff:.3g}")

    clicks = seen.labels[:, OBJECTIVES.index("click")]
    with stages.stage("first pass (xgboost)"):
        fp_started = time.perf_counter()
        booster = first_pass.train_first_pass(fp_features[train_rows], clicks[train_rows], seed=seed)
        first_pass_path = models_dir / "first_pass.ubj"
        first_pass.save_first_pass(booster, first_pass_path)
        fp_report = first_pass.evaluate_first_pass(
            booster,
            (fp_features[train_rows], clicks[train_rows]),
            (fp_features[heldout_rows], clicks[heldout_rows]),
            seconds=time.perf_counter() - fp_started,
        )
    console.print(f"  first pass: held-out click AUC {fp_report.heldout_auc:.3f}")

    fp_score = first_pass.predict_first_pass(booster, fp_features)
    dense_plan = InputPlan(registry, dense_features)
    from features.signature import InputTensor

    dense_tensor = InputTensor(name="dense", dtype="float32", features=tuple(dense_features))
    dense = _assemble(dense_plan, reader, [dense_tensor], seen.member_id, seen.item_id, now_s, fp_score)["dense"]
    flat, indptr = hashtag_ids(corpus, seen.item_id)
    data = ranker.RankerData(
        member_id=seen.member_id,
        item_id=seen.item_id,
        author_id=np.asarray(corpus.item_author[seen.item_id], dtype=np.int64),
        hashtags=ranker.pad_hashtags(flat, indptr, corpus.n_hashtags),
        dense=dense,
        labels=seen.labels,
    )
    with stages.bar("ranker (torch)") as on_step:
        model, rk_report = ranker.train_ranker(
            data.take(train_rows),
            data.take(heldout_rows),
            n_members=members,
            n_items=items,
            n_hashtags=hashtags,
            seed=seed,
            config=config,
            on_step=on_step,
        )
    losses = ", ".join(f"{loss:.4f}" for loss in rk_report.epoch_loss)
    aucs = "  ".join(f"{name} {auc:.3f}" for name, auc in rk_report.heldout_auc.items())
    console.print(f"  ranker: {rk_report.steps} steps, loss per epoch [{losses}]; held-out AUC {aucs}")

    with stages.stage("export + parity"):
        weights = ranker.export_weights(model)
        weights_path = models_dir / "ranker_weights.npz"
        np.savez(weights_path, **weights)  # type: ignore[arg-type]
        ranker_version = _digest_version(seed, weights)
        onnx_path = models_dir / "ranker.onnx"
        onnx_export.save_ranker_onnx(
            onnx_export.build_ranker_onnx(weights, version=ranker_version, embedding_dim=config.embedding_dim),
            onnx_path,
        )
        whole_path = models_dir / "ranker_whole.onnx"
        onnx_export.save_ranker_onnx(
            onnx_export.build_whole_model_onnx(weights, version=ranker_version, embedding_dim=config.embedding_dim),
            whole_path,
        )
        tables.update(_embedding_tables(corpus, weights))
        served_reader = ArrayReader(tables)
        probe_rows = heldout_rows[:PARITY_ROWS]
        probe = data.take(probe_rows)
        x = ranker.ranker_inputs(model, probe)
        probe_args = (seen.member_id[probe_rows], seen.item_id[probe_rows], now_s, fp_score[probe_rows])
        rk_plan = InputPlan(registry, rk_signature.inputs[0].features)
        served = _assemble(rk_plan, served_reader, rk_signature.inputs, *probe_args)["features"]
        two_stage_diff = float(np.max(np.abs(served - x), initial=0.0))
        if not two_stage_diff <= 1e-5:
            raise WorldBuildError(f"two-stage inputs differ from the model's own by {two_stage_diff:.3g}")
        whole_plan = InputPlan(registry, (f for t in whole_signature.inputs for f in t.features))
        whole_inputs = _assemble(whole_plan, served_reader, whole_signature.inputs, *probe_args)
        try:
            parity = onnx_export.check_parity(
                {
                    "torch": ranker.predict_dense(model, x),
                    "torch_whole_model": ranker.predict(model, probe),
                    "onnxruntime": onnx_export.run_onnx(onnx_path, served),
                    "numpy": onnx_export.dense_forward(weights, served),
                    "onnxruntime_whole_model": onnx_export.run_whole_onnx(whole_path, whole_inputs),
                },
                tolerance=PARITY_TOLERANCE,
            )
        except onnx_export.ParityError as error:
            raise WorldBuildError(f"ranker export parity failed: {error}") from error

    with stages.stage("store tables", f"{len(tables)} tables"):
        entries = {table: _write_table(store_dir, table, ids, rows, seed) for table, (ids, rows) in tables.items()}
    with stages.stage("release", "validation sample, offline sketches"):
        heldout_args = (seen.member_id[heldout_rows], seen.item_id[heldout_rows], now_s, fp_score[heldout_rows])
        heldout_inputs = _assemble(rk_plan, served_reader, rk_signature.inputs, *heldout_args)
        heldout_scores = onnx_export.run_onnx(onnx_path, heldout_inputs[RANKER_INPUT])
        ranker_tables = {view.table: entries[view.table].version for view in rk_plan.views}
        release_path = write_release(
            out_dir,
            name=f"{product.RANKER_MODEL}-{ranker_version[:12]}",
            signature=rk_signature,
            engine="local_onnx",
            model_file=onnx_path,
            tables=ranker_tables,
            inputs=heldout_inputs,
            outputs={RANKER_OUTPUT: heldout_scores},
        )
    console.print(f"  release: {release_path.relative_to(out_dir)}")
    with stages.stage("ann index", "job_topics"):
        index = build_from_embedded(store_dir, "job_topics", entries["job_topics"].version, seed=seed)
        target = index_dir(out_dir / "indexes", "job_topics", entries["job_topics"].version)
        if not target.exists():
            index.save(target)
    _dump(out_dir / "workflows" / "feed.yaml", product.workflow_document(), "The feed workflow (`quasar world build`).")
    _dump(out_dir / "engines" / "feed.yaml", product.engines_document(), "The feed's engines and routes.")
    with stages.stage("jobs product"):
        jobs_entries, jobs_models, jobs_report = _build_jobs(out_dir, corpus, tables, now_s, seed)
        entries.update(jobs_entries)
    console.print(
        f"  jobs: first pass held-out apply AUC {jobs_report['first_pass_auc']:.3f}; ranker apply AUC "
        f"{jobs_report['ranker_auc']['apply']:.3f}, save AUC {jobs_report['ranker_auc']['save']:.3f}"
    )

    with stages.stage("release statistics", "served inputs of held-out members"):
        # Held out: members the build never benchmarks first (the benchmarks draw from the whole range).
        stats_members = np.random.default_rng(seed + 7).choice(
            np.arange(1, members + 1, dtype=np.int64), size=min(RELEASE_STATS_MEMBERS, members), replace=False
        )
        sketched = write_served_stats(out_dir, release_path, rk_signature, stats_members, now_s)
    console.print(f"  release statistics: {sketched} served rows of {len(stats_members)} members sketched")

    manifest = WorldManifest(
        format=MANIFEST_FORMAT,
        seed=seed,
        members=members,
        items=items,
        hashtags=hashtags,
        impressions=len(seen),
        topic_dim=spec.topic_dim,
        embedding_dim=config.embedding_dim,
        objectives=OBJECTIVES,
        first_pass_features=FIRST_PASS_FEATURES,
        member_features=MEMBER_FEATURES,
        dense_features=DENSE_FEATURES,
        embedding_tables=EMBEDDING_TABLES,
        first_pass_input=FIRST_PASS_INPUT,
        first_pass_output=FIRST_PASS_OUTPUT,
        ranker_input=RANKER_INPUT,
        ranker_output=RANKER_OUTPUT,
        ranker_input_dim=ranker_input_dim(config.embedding_dim),
        ranker_version=ranker_version,
        tables=entries,
        models={
            "first_pass": _model_file(out_dir, first_pass_path),
            "ranker": _model_file(out_dir, onnx_path),
            "ranker_whole": _model_file(out_dir, whole_path),
            "ranker_weights": _model_file(out_dir, weights_path),
            **{name: _model_file(out_dir, path) for name, path in jobs_models.items()},
        },
        training=_json_values(
            {
                "first_pass": asdict(fp_report),
                "ranker": asdict(rk_report),
                "parity": {
                    "max_abs_diff": parity,
                    "two_stage_input_max_abs_diff": two_stage_diff,
                    "declared_vs_layout_first_pass_max_abs_diff": layout_diff,
                    "rows": len(x),
                },
                "reference_time_s": now_s,
                "jobs": jobs_report,
                "stage_seconds": {name: round(s, 3) for name, s in stages.seconds.items()},
            }
        ),
        build_seconds=round(time.perf_counter() - started, 3),
    )
    (out_dir / MANIFEST_FILE).write_text(manifest.to_json())
    console.print(f"[bold]world ready[/bold] in {manifest.build_seconds:.1f} s → {out_dir}")
    return manifest


def _build_jobs(
    out_dir: Path, corpus: Corpus, feed_tables: Mapping[str, tuple[I64, np.ndarray]], now_s: int, seed: int
) -> tuple[dict[str, TableEntry], dict[str, Path], dict[str, Any]]:
    """The jobs product (`quasar.demo.jobs_product`): tables, declarations, models trained through the
    declared assembly, ANN index, workflow and engines. Returns (table entries, model files, report)."""
    import xgboost as xgb

    from features import ArrayReader, InputPlan, load_registry, load_signatures
    from kvstore.ann import build_from_embedded, index_dir
    from quasar.demo import jobs_product as jobs
    from quasar.demo.interactions import roc_auc

    tables = jobs.jobs_tables(corpus, dict(feed_tables), reference_time_s=now_s)
    connections = tables["jobs_seeker_network"][1].shape[1]
    _dump(
        out_dir / "features" / "jobs.yaml",
        jobs.features_document(topic_dim=int(tables["jobs_vectors"][1].shape[1]), connections=connections),
        "The jobs product's features, written by `quasar world build`.",
    )
    models_dir = out_dir / "models"
    for name, document in jobs.signature_documents().items():
        _dump(models_dir / f"{name}.signature.yaml", document, f"Signature of {name}, written with the model.")
    registry = load_registry(out_dir / "features")
    signatures = load_signatures(models_dir, registry)
    fp_signature, rk_signature = signatures[jobs.FIRST_PASS_MODEL], signatures[jobs.RANKER_MODEL]

    seekers, shown, labels = jobs.impressions(corpus, tables, seed=seed)
    train, heldout = _split(len(seekers), seed + 1)
    reader = ArrayReader(tables)
    fp_plan = InputPlan(registry, fp_signature.inputs[0].features)
    x_fp = _assemble(fp_plan, reader, fp_signature.inputs, seekers, shown, now_s)["features"]
    apply = labels[:, 0]
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.2, "nthread": 2, "seed": seed}
    booster = xgb.train(params, xgb.DMatrix(x_fp[train], label=apply[train], nthread=2), num_boost_round=40)
    fp_path = models_dir / "jobs_first_pass.ubj"
    booster.save_model(str(fp_path))
    fp_score = np.asarray(booster.inplace_predict(x_fp), dtype=np.float32)

    rk_plan = InputPlan(registry, rk_signature.inputs[0].features)
    x_rk = _assemble(rk_plan, reader, rk_signature.inputs, seekers, shown, now_s, fp_score)["features"]
    mean, scale, weights, bias = jobs.train_logistic(x_rk[train], labels[train])
    version = _digest_version(seed, {"mean": mean, "scale": scale, "weights": weights, "bias": bias})
    rk_path = models_dir / "jobs_ranker.onnx"
    jobs.save_onnx(jobs.logistic_onnx(mean, scale, weights, bias, version=version), rk_path)
    scores = 1 / (1 + np.exp(-(((x_rk[heldout] - mean) / scale) @ weights + bias)))
    report = {
        "impressions": len(seekers),
        "first_pass_auc": float(roc_auc(apply[heldout], fp_score[heldout])),
        "ranker_auc": {h: float(roc_auc(labels[heldout, i], scores[:, i])) for i, h in enumerate(jobs.HEADS)},
        "ranker_version": version,
    }
    entries = {table: _write_table(out_dir / "store", table, ids, rows, seed) for table, (ids, rows) in tables.items()}
    index = build_from_embedded(out_dir / "store", "jobs_vectors", entries["jobs_vectors"].version, seed=seed)
    target = index_dir(out_dir / "indexes", "jobs_vectors", entries["jobs_vectors"].version)
    if not target.exists():
        index.save(target)
    _dump(out_dir / "workflows" / "jobs.yaml", jobs.workflow_document(), "The jobs workflow (`quasar world build`).")
    _dump(out_dir / "engines" / "jobs.yaml", jobs.engines_document(), "The jobs product's engines, routes, services.")
    return entries, {"jobs_first_pass": fp_path, "jobs_ranker": rk_path}, _json_values(report)


def world_corpus(out_dir: Path) -> Corpus:
    """The corpus a built world was made from, generated again from its manifest (deterministic; the world
    itself holds only the tables serving reads)."""
    manifest = load_manifest(out_dir)
    spec = WorldSpec(seed=manifest.seed, members=manifest.members, items=manifest.items, hashtags=manifest.hashtags)
    return generate_corpus(spec)
