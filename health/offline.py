"""Offline statistics: the sketches the trainer writes of a release's training inputs and outputs, the
reference that online sketches are compared with.

A release's file (`<releases_dir>/<release>.stats.kll`, see `offline_stats_path`) holds one
`OfflineStats` per model of the release. The trainer builds them with `offline_stats`, which reads the
columns through the same `watched_columns` code as the gateway's monitor.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from features.signature import ModelSignature
from health.columns import watched_columns
from health.sketches import DEFAULT_K, ModelSketches

STATS_SUFFIX = ".stats.kll"
_FORMAT = "quasar.health.offline/1"
_CHUNK_ROWS = 65_536  # rows per update: bounds the temporary matrices of a large training set


@dataclass(frozen=True)
class OfflineStats:
    """The training-time sketches of one model of a release (features and heads)."""

    model: str
    sketches: ModelSketches


def offline_stats_path(releases_dir: Path, release: str) -> Path:
    """Where release `release`'s offline stats live: the release manager writes them, health reads them."""
    return Path(releases_dir) / f"{release}{STATS_SUFFIX}"


def offline_stats(
    signature: ModelSignature,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    k: int = DEFAULT_K,
) -> OfflineStats:
    """Sketches of `signature`'s watched columns over the rows of `inputs` (tensors as the model takes them)
    and `outputs` (as it returns them), read by the same code the gateway's monitor uses."""
    columns = watched_columns(signature)
    sketches = ModelSketches(columns.features, columns.heads, k)
    rows = {len(a) for a in (*inputs.values(), *outputs.values())}
    total = max(rows) if rows else 0
    for start in range(0, total, _CHUNK_ROWS):
        end = start + _CHUNK_ROWS
        sketches.update(
            *columns.values(
                {name: a[start:end] for name, a in inputs.items()}, {name: a[start:end] for name, a in outputs.items()}
            )
        )
    return OfflineStats(model=signature.model, sketches=sketches)


def offline_stats_of_calls(
    signature: ModelSignature,
    calls: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    k: int = DEFAULT_K,
    request_entities: Collection[str] = (),
) -> OfflineStats:
    """Sketches of served calls, one (inputs, outputs) per call, exactly as the gateway's monitor sketches
    them (features of `request_entities` once per call)."""
    columns = watched_columns(signature, request_entities)
    sketches = ModelSketches(columns.features, columns.heads, k)
    for inputs, outputs in calls:
        sketches.update(*columns.values(inputs, outputs), once=columns.per_request)
    return OfflineStats(model=signature.model, sketches=sketches)


def save_offline_stats(path: Path, stats: Iterable[OfflineStats]) -> None:
    """Write one release's stats (one entry per model) to `path`, atomically (a reader never sees half)."""
    by_model: dict[str, object] = {}
    for entry in stats:
        if entry.model in by_model:
            raise ValueError(f"two offline stats for model {entry.model!r}")
        by_model[entry.model] = entry.sketches.to_json()
    atomic_write(Path(path), orjson.dumps({"format": _FORMAT, "models": by_model}))


def load_offline_stats(path: Path) -> dict[str, OfflineStats]:
    """model -> its stats, from a file `save_offline_stats` wrote. OSError when it cannot be read; a
    ValueError naming `path` when it is not such a file (truncated, corrupt, another format)."""
    data = Path(path).read_bytes()
    try:
        envelope = orjson.loads(data)
        if not isinstance(envelope, dict) or envelope.get("format") != _FORMAT:
            raise ValueError(f"expected format {_FORMAT!r}")
        models = envelope["models"]
        if not isinstance(models, dict):
            raise ValueError("'models' is not a mapping")
        return {
            str(model): OfflineStats(model=str(model), sketches=ModelSketches.from_json(entry))
            for model, entry in models.items()
        }
    except (orjson.JSONDecodeError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: not a valid offline stats file: {error}") from None


def release_stats_loader(releases_dir: Path) -> Callable[[str, str], OfflineStats | None]:
    """A `(model, release) -> OfflineStats | None` reader of `releases_dir` for `HealthMonitor`: None when
    the release has no stats file or it lacks the model; the file is reread when its mtime changes.
    Thread-safe (the monitor calls it off the event loop). Raises what `load_offline_stats` raises."""
    cache: dict[str, tuple[int, dict[str, OfflineStats]]] = {}
    lock = threading.Lock()

    def load(model: str, release: str) -> OfflineStats | None:
        path = offline_stats_path(releases_dir, release)
        try:
            mtime_ns = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        with lock:
            cached = cache.get(release)
            if cached is None or cached[0] != mtime_ns:
                cached = (mtime_ns, load_offline_stats(path))
                cache[release] = cached
        return cached[1].get(model)

    return load


def atomic_write(path: Path, data: bytes, mtime_s: float | None = None) -> None:
    """Write `data` to `path` through a temporary file in the same directory and `os.replace`; `mtime_s`
    sets the file's modification time (the writer's clock, so readers judge its age on the same clock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if mtime_s is not None:
            os.utime(temporary, (mtime_s, mtime_s))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
