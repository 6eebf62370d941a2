"""The demo trainer's release: what a trainer ships beside a model so a gateway can validate, apply and
watch it (`releases/<release>.yaml`, its validation sample and its offline statistics)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from features.signature import ModelSignature
from health.offline import offline_stats, offline_stats_path, save_offline_stats

RELEASES_DIR = "releases"
VALIDATION_ROWS = 256


def write_release(
    out_dir: Path,
    *,
    name: str,
    signature: ModelSignature,
    engine: str,
    model_file: Path,
    tables: Mapping[str, str],
    inputs: Mapping[str, npt.NDArray[Any]],
    outputs: Mapping[str, npt.NDArray[Any]],
) -> Path:
    """Write release `name` of `signature.model` into `<out_dir>/releases/`: the manifest, the first rows of
    the held-out `inputs` with the model's `outputs` as the validation sample, and the offline sketches of
    every input feature and head over all of them. The manifest's path."""
    directory = out_dir / RELEASES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    sample = directory / f"{name}.validation.npz"
    arrays = {f"in.{k}": v[:VALIDATION_ROWS] for k, v in inputs.items()}
    arrays.update({f"out.{k}": v[:VALIDATION_ROWS] for k, v in outputs.items()})
    np.savez(sample, **arrays)  # type: ignore[arg-type]  # numpy's stub types the first kwarg as allow_pickle
    stats = offline_stats_path(directory, name)
    save_offline_stats(stats, [offline_stats(signature, inputs, outputs)])
    manifest = {
        "release": name,
        "model": signature.model,
        "signature": _relative(Path(signature.source), directory),
        "artifacts": {engine: {"file": _relative(model_file, directory)}},
        "tables": dict(sorted(tables.items())),
        "route": {"targets": [{"engine": engine}]},
        "offline_stats": stats.name,
        "validation": {"sample": sample.name, "tolerance": 1e-4, "warmup_requests": 20, "warmup_budget_s": 0.25},
        "description": "Written by `quasar world build` (the demo trainer) with the model it trained.",
    }
    path = directory / f"{name}.yaml"
    path.write_text(
        "# A release: validate with `quasar deploy validate`, apply with `quasar deploy apply`.\n"
        + yaml.safe_dump(manifest, sort_keys=False, width=120)
    )
    return path


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), start.resolve())
