"""XGBoost in process: gradient-boosted rankers (e.g. first-pass rankers). The only module importing xgboost."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xgboost as xgb

from engines._local import Loaded, ModelTable, RunOn, call_offloaded
from engines._offload import Offloader
from engines._signature import check_inputs, check_outputs
from engines.base import Engine, LoadsModels
from engines.compiled_trees import CompileFailed, Predictor, compile_booster, default_cache_dir
from engines.types import ModelMetadata, ModelRef, Tensors, TensorSpec

INPUT = "features"
OUTPUT = "score"

log = logging.getLogger(__name__)

_Predict = Callable[[np.ndarray], np.ndarray]  # a loaded model: features [n, width] -> scores [n]


class XGBoostEngine:
    """Serves XGBoost Boosters from local model files (JSON or UBJSON).

    Signature of every model: input `features` float32 [n, booster.num_features()], output `score`
    float32 [n] (a multi-output booster fails its calls with `BadOutput`). Version: the booster
    attribute `version` when set, else the first 12 hex digits of the file's sha256. Prediction uses
    `inplace_predict` (thread-safe) with `nthread` threads per call, on the event loop (`run_on` auto or
    loop: the GIL is released for the prediction itself) or inside the shared `Offloader` (threads).
    With `predictor="compiled"` a model's trees are compiled once (cached in `compile_cache_dir`) and
    predicted on one thread by the library, after a parity check against the booster; a model that
    cannot be compiled is served by XGBoost, with a warning naming why.
    """

    def __init__(
        self,
        name: str,
        models: Mapping[str, Path],
        offloader: Offloader,
        *,
        nthread: int = 1,
        run_on: RunOn = "auto",
        predictor: Predictor = "xgboost",
        compile_cache_dir: Path | None = None,
    ) -> None:
        self.name = name
        self._paths = dict(models)
        self._offloader = offloader
        self._nthread = nthread
        self._inline = run_on != "threads"
        self._predictor = predictor
        self._compile_cache_dir = compile_cache_dir or default_cache_dir()
        self._models: ModelTable[_Predict] = ModelTable(name)

    async def start(self) -> None:
        """Load every booster off the loop; raises `EngineUnavailable` naming the model that failed."""
        await self._models.load(self._offloader, self._paths, self._load)

    async def load_model(self, name: str, path: Path) -> None:
        """Load `path` as model `name` while serving (see `engines.base.LoadsModels`)."""
        await self._models.load_one(self._offloader, name, path, self._load)

    async def ready(self) -> bool:
        return self._models.ready

    async def metadata(self, model: ModelRef) -> ModelMetadata:
        return self._models.get(model).metadata

    async def infer(self, model: ModelRef, inputs: Tensors, *, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        loaded = self._models.get(model)
        where = {"target": self.name, "model": str(model)}
        check_inputs(loaded.metadata, inputs, **where)
        score = await call_offloaded(
            self._offloader,
            loaded.runtime,
            inputs[INPUT],
            timeout_s=timeout_s,
            target=self.name,
            model=str(model),
            inline=self._inline,
        )
        return check_outputs(loaded.metadata, {OUTPUT: score}, **where)

    async def close(self) -> None:
        """Drop the boosters; calls already running keep theirs. The offloader is not ours."""
        self._models.close()

    def _load(self, model: str, path: Path) -> Loaded[_Predict]:
        """Runs in a worker thread. Reads once, so the version hash and the booster see the same bytes."""
        data = Path(path).read_bytes()
        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        booster.set_param({"nthread": self._nthread})
        predict: _Predict = functools.partial(_predict, booster)
        if self._predictor == "compiled":
            try:
                predict = compile_booster(booster, data, self._compile_cache_dir).predict
            except CompileFailed as error:
                log.warning("serving with XGBoost's predictor: %s", error, extra={"engine": self.name, "model": model})
        metadata = ModelMetadata(
            name=model,
            version=booster.attr("version") or hashlib.sha256(data).hexdigest()[:12],
            inputs=(TensorSpec(INPUT, "float32", (-1, int(booster.num_features()))),),
            outputs=(TensorSpec(OUTPUT, "float32", (-1,)),),
        )
        return Loaded(runtime=predict, metadata=metadata)


def _predict(booster: Any, features: np.ndarray) -> np.ndarray:
    # validate_features=False: the signature check already pinned the width; numpy input has no names.
    return np.asarray(booster.inplace_predict(features, validate_features=False), dtype=np.float32)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a caller
    _conforms: type[Engine] = XGBoostEngine
    _loads: type[LoadsModels] = XGBoostEngine
