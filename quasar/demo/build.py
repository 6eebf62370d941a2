"""`build_world`: the demo world, its embedding tables and its models, from a seed, in one call.

Layout of the world directory:

    corpus/                      Corpus.save (memory-mapped by serving)
    store/                       embedded store root: tables member, item, author, hashtag, member_features
    models/first_pass.ubj        XGBoost P(click) over FIRST_PASS_FEATURES
    models/ranker.onnx           the ranker's dense part (two-stage mode)
    models/ranker_whole.onnx     the whole ranker, embedding tables inside (whole-model mode)
    models/ranker_weights.npz    every ranker weight, for other exporters (names: ranker.export_weights)
    world.json                   WorldManifest, written last: its presence marks a complete build

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

from quasar.demo.world import WorldSpec, generate_corpus
from remix.corpus import Corpus
from remix.feature_spec import (
    DENSE_FEATURES,
    EMBEDDING_TABLES,
    FIRST_PASS_FEATURES,
    FIRST_PASS_INPUT,
    FIRST_PASS_OUTPUT,
    MEMBER_FEATURES,
    OBJECTIVES,
    RANKER_INPUT,
    RANKER_OUTPUT,
    dense_features_pairs,
    first_pass_features_pairs,
    hashtag_ids,
    member_feature_rows,
    pool_multi_valued,
    ranker_input,
    ranker_input_dim,
)

MANIFEST_FORMAT = 1
MANIFEST_FILE = "world.json"
MEMBER_FEATURES_TABLE = "member_features"
IMPRESSIONS_PER_MEMBER = 30
HELDOUT_SHARE = 0.2
PARITY_ROWS = 256
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
    if "ranker_whole" not in manifest.models:  # built before whole-model mode existed
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


def _served_inputs(corpus: Corpus, weights: Mapping[str, F32], member_ids: I64, item_ids: I64, dense: F32) -> F32:
    """Ranker input rows assembled as the serving step does it, from the exported tables."""
    flat, indptr = hashtag_ids(corpus, item_ids)
    return ranker_input(
        weights["embedding_member"][member_ids],
        weights["embedding_item"][item_ids],
        weights["embedding_author"][np.asarray(corpus.item_author[item_ids], dtype=np.int64)],
        pool_multi_valued(weights["embedding_hashtag"][flat], indptr, "mean"),
        dense,
    )


def _whole_inputs(probe: Any, n_hashtags: int) -> dict[str, npt.NDArray[Any]]:
    """The whole model's inputs for training rows (`ranker.RankerData`, hashtags padded with n_hashtags)."""
    from remix.steps.rank_whole import AUTHOR_ID, DENSE, HASHTAG_IDS, HASHTAG_MASK, ITEM_ID, MEMBER_ID

    return {
        MEMBER_ID: probe.member_id,
        ITEM_ID: probe.item_id,
        AUTHOR_ID: probe.author_id,
        HASHTAG_IDS: probe.hashtags,
        HASHTAG_MASK: (probe.hashtags != n_hashtags).astype(np.float32),
        DENSE: probe.dense,
    }


def _write_tables(store_dir: Path, corpus: Corpus, weights: Mapping[str, F32], seed: int) -> dict[str, TableEntry]:
    """Write every table as a content-named version and make it current (an identical version is reused)."""
    from kvstore.embedded import list_versions, set_current, write_version

    member_ids = np.arange(1, corpus.n_members + 1, dtype=np.int64)
    item_ids = np.arange(1, corpus.n_items + 1, dtype=np.int64)
    contents: dict[str, tuple[I64, F32]] = {
        "member": (member_ids, weights["embedding_member"][member_ids]),
        "item": (item_ids, weights["embedding_item"][item_ids]),
        "author": (member_ids, weights["embedding_author"][member_ids]),
        "hashtag": (np.arange(corpus.n_hashtags, dtype=np.int64), weights["embedding_hashtag"]),
        MEMBER_FEATURES_TABLE: (member_ids, member_feature_rows(corpus, member_ids)),
    }
    tables: dict[str, TableEntry] = {}
    for table, (ids, vectors) in contents.items():
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        version = _digest_version(seed, {"ids": ids, "vectors": vectors})
        if version not in list_versions(store_dir, table):
            write_version(store_dir, table, ids, vectors, dtype="float32", version=version)
        set_current(store_dir, table, version)
        tables[table] = TableEntry(
            version=version, dim=int(vectors.shape[1]), dtype="float32", first_id=int(ids[0]), count=len(ids)
        )
    return tables


def _write_declarations(features_dir: Path, embedding_dim: int) -> None:
    """The world's store tables declared as feature views (`features/feed.yaml`): the gateway checks them
    against the store at startup and `quasar features` lists and searches them."""
    import yaml

    def vector_view(name: str, entity: str, table: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "entity": entity,
            "table": table,
            "owner": "feed-ranking",
            "tags": ["embedding", "two-stage"],
            "description": description,
            "features": [{"name": "vector", "shape": [embedding_dim], "description": "learned embedding"}],
        }

    document = {
        "entities": [
            {"name": "member", "key": "request", "description": "the member the feed is for"},
            {"name": "item", "key": "candidate", "description": "a post, article or job"},
            {"name": "author", "key": "none", "description": "the member who wrote an item"},
            {"name": "hashtag", "key": "none", "description": "a hashtag; items carry up to a few"},
        ],
        "views": [
            vector_view("member_embedding", "member", "member", "The member tower of the multi-task ranker."),
            vector_view("item_embedding", "item", "item", "The item tower of the multi-task ranker."),
            vector_view("author_embedding", "author", "author", "The author tower of the multi-task ranker."),
            vector_view("hashtag_embedding", "hashtag", "hashtag", "Hashtag vectors, mean-pooled per item."),
            {
                "name": "member_profile",
                "entity": "member",
                "table": MEMBER_FEATURES_TABLE,
                "owner": "feed-ranking",
                "tags": ["profile", "dense"],
                "description": "Dense member features the offline job computes.",
                "features": [
                    {"name": name, "description": description}
                    for name, description in zip(
                        MEMBER_FEATURES,
                        (
                            "how engaged the member is, 0..1",
                            "log1p of the number of connections",
                            "log1p of the number of followed hashtags",
                            "years since the member joined",
                        ),
                        strict=True,
                    )
                ],
            },
        ],
    }
    features_dir.mkdir(parents=True, exist_ok=True)
    header = "# Written by `quasar world build`: the world's store tables declared as feature views.\n"
    (features_dir / "feed.yaml").write_text(header + yaml.safe_dump(document, sort_keys=False, width=120))


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
) -> WorldManifest:
    """Build (or reuse) the world in `out_dir`; returns its manifest.

    A complete world with the same seed and sizes (models present, its table versions current) is
    reused unless `force`. Raises WorldBuildError when
    an export disagrees with the trained model (parity above 1e-5) or the two-stage inputs differ from
    the whole model's. `impressions` defaults to 30 per member.
    """
    from quasar.demo import first_pass, onnx_export, ranker
    from quasar.demo.interactions import generate_interactions

    out_dir = Path(out_dir)
    spec = WorldSpec(seed=seed, members=members, items=items, hashtags=hashtags)
    console = Console(quiet=not progress, highlight=False, soft_wrap=True)
    n_impressions = impressions if impressions is not None else IMPRESSIONS_PER_MEMBER * members
    existing = None if force else _complete(out_dir, spec, n_impressions)
    if existing is not None:
        _write_declarations(out_dir / "features", existing.embedding_dim)  # worlds built before they existed
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
    for stale in (out_dir / "corpus", models_dir):
        shutil.rmtree(stale, ignore_errors=True)

    with stages.stage("corpus", f"{members:,} members · {items:,} items"):
        corpus = generate_corpus(spec)
        corpus.save(out_dir / "corpus")
    with stages.stage("interactions", f"{n_impressions:,} impressions"):
        seen = generate_interactions(corpus, n_impressions, seed=seed)
        train_rows, heldout_rows = _split(len(seen), seed)
        fp_features = first_pass_features_pairs(corpus, seen.member_id, seen.item_id)

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
    dense = dense_features_pairs(
        corpus, seen.member_id, seen.item_id, fp_score, member_feature_rows(corpus, seen.member_id)
    )
    flat, indptr = hashtag_ids(corpus, seen.item_id)
    data = ranker.RankerData(
        member_id=seen.member_id,
        item_id=seen.item_id,
        author_id=np.asarray(corpus.item_author[seen.item_id], dtype=np.int64),
        hashtags=ranker.pad_hashtags(flat, indptr, corpus.n_hashtags),
        dense=dense,
        labels=seen.labels,
    )
    config = ranker.RankerConfig()
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
        probe = data.take(heldout_rows[:PARITY_ROWS])
        x = ranker.ranker_inputs(model, probe)
        served = _served_inputs(corpus, weights, probe.member_id, probe.item_id, probe.dense)
        two_stage_diff = float(np.max(np.abs(served - x), initial=0.0))
        if not two_stage_diff <= 1e-6:
            raise WorldBuildError(f"two-stage inputs differ from the model's own by {two_stage_diff:.3g}")
        try:
            parity = onnx_export.check_parity(
                {
                    "torch": ranker.predict_dense(model, x),
                    "torch_whole_model": ranker.predict(model, probe),
                    "onnxruntime": onnx_export.run_onnx(onnx_path, served),
                    "numpy": onnx_export.dense_forward(weights, served),
                    "onnxruntime_whole_model": onnx_export.run_whole_onnx(whole_path, _whole_inputs(probe, hashtags)),
                },
                tolerance=PARITY_TOLERANCE,
            )
        except onnx_export.ParityError as error:
            raise WorldBuildError(f"ranker export parity failed: {error}") from error

    with stages.stage("embedding tables"):
        tables = _write_tables(out_dir / "store", corpus, weights, seed)
        _write_declarations(out_dir / "features", config.embedding_dim)

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
        tables=tables,
        models={
            "first_pass": _model_file(out_dir, first_pass_path),
            "ranker": _model_file(out_dir, onnx_path),
            "ranker_whole": _model_file(out_dir, whole_path),
            "ranker_weights": _model_file(out_dir, weights_path),
        },
        training=_json_values(
            {
                "first_pass": asdict(fp_report),
                "ranker": asdict(rk_report),
                "parity": {"max_abs_diff": parity, "two_stage_input_max_abs_diff": two_stage_diff, "rows": len(x)},
                "stage_seconds": {name: round(s, 3) for name, s in stages.seconds.items()},
            }
        ),
        build_seconds=round(time.perf_counter() - started, 3),
    )
    (out_dir / MANIFEST_FILE).write_text(manifest.to_json())
    console.print(f"[bold]world ready[/bold] in {manifest.build_seconds:.1f} s → {out_dir}")
    return manifest
