"""The Ray Serve deployment that hosts XGBoost boosters, importable by Ray's worker processes.

Each replica runs the same `XGBoostEngine` the gateway runs in process (same loading, version, checks
and prediction), so a `ray://` target and an in-process target give the same scores by construction.
Calls are batched by `@serve.batch`: concurrent calls for one model are stacked into one prediction.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from engines._offload import Offloader
from engines.types import ModelMetadata, ModelRef
from engines.xgboost import INPUT, OUTPUT, XGBoostEngine


def _batch(*, max_batch_size: int, batch_wait_timeout_s: float) -> Callable[[Callable[..., Any]], Any]:
    """`serve.batch`, whose stubs only fit one-argument functions; ours batches two (a list each)."""
    decorator: Callable[[Callable[..., Any]], Any] = serve.batch(
        max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s
    )
    return decorator


@serve.deployment(name="XGBoostScorer")
class XGBoostScorer:
    """Serves `models` (name -> booster file bytes: shipped with the deployment, so replicas need no
    shared file system). `predict(model, features[n, k]) -> score[n]`; `signatures()` says what is
    served. Replicas predict on one thread of their own (`nthread` XGBoost threads), off their loop."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor before the first call
        self, models: Mapping[str, bytes], max_batch_size: int, batch_wait_timeout_s: float, nthread: int = 1
    ) -> None:
        # Removed by its finalizer when the replica goes away.
        self._dir = tempfile.TemporaryDirectory(prefix="quasar-ray-xgb-")
        paths = {}
        for name, data in models.items():
            path = Path(self._dir.name) / f"{name}.model"
            path.write_bytes(data)
            paths[name] = path
        self._offloader = Offloader(max_workers=1, max_pending=max(64, 4 * max_batch_size))
        self._engine = XGBoostEngine("ray-replica", paths, self._offloader, nthread=nthread)
        await self._engine.start()
        self._signatures = {name: await self._engine.metadata(ModelRef(name)) for name in models}
        self._predict_batch.set_max_batch_size(max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def signatures(self) -> dict[str, ModelMetadata]:
        return dict(self._signatures)

    async def predict(self, model: str, features: np.ndarray) -> np.ndarray:
        """Checked here, per call, so one bad call never fails the batch it would have joined."""
        signature = self._signatures.get(model)
        if signature is None:
            raise KeyError(f"no model {model!r}; serving {sorted(self._signatures)}")
        width = signature.input(INPUT).shape[1]
        if features.dtype != np.float32 or features.ndim != 2 or features.shape[1] != width:
            raise ValueError(f"features must be float32 [n, {width}], got {features.dtype} {features.shape}")
        scores: np.ndarray = await self._predict_batch(model, features)
        return scores

    @_batch(max_batch_size=32, batch_wait_timeout_s=0.002)  # both replaced in __init__ from config
    async def _predict_batch(self, models: list[str], features: list[np.ndarray]) -> list[np.ndarray]:
        """One prediction per model in the batch over the stacked rows, split back per call."""
        by_model: dict[str, list[int]] = defaultdict(list)
        for index, model in enumerate(models):
            by_model[model].append(index)
        results: list[Any] = [None] * len(models)
        for model, indices in by_model.items():
            stacked = np.concatenate([features[i] for i in indices]) if len(indices) > 1 else features[indices[0]]
            scores = (await self._engine.infer(ModelRef(model), {INPUT: stacked}))[OUTPUT]
            bounds = np.cumsum([len(features[i]) for i in indices])[:-1]
            for index, part in zip(indices, np.split(scores, bounds), strict=True):
                results[index] = part
        return results
