"""The first-pass model: a small XGBoost classifier of P(click) over `FIRST_PASS_FEATURES`.

Served by the XGBoost engine with input `FIRST_PASS_INPUT` (float32 (n, len(FIRST_PASS_FEATURES)), raw
feature rows in that order) and output "score" = P(click) (objective binary:logistic). The model file
carries no feature names, so the engine can predict from a plain array; the manifest records the layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from quasar.demo.interactions import roc_auc
from quasar.demo.layout import FIRST_PASS_FEATURES

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FirstPassConfig:
    trees: int = 60
    max_depth: int = 5
    learning_rate: float = 0.2
    threads: int = 2


@dataclass(frozen=True)
class FirstPassReport:
    trees: int
    train_rows: int
    heldout_rows: int
    train_auc: float
    heldout_auc: float
    seconds: float


def _check_width(features: F32) -> None:
    if features.ndim != 2 or features.shape[1] != len(FIRST_PASS_FEATURES):
        raise ValueError(f"first-pass features must be (n, {len(FIRST_PASS_FEATURES)}), got {features.shape}")


def train_first_pass(features: F32, clicks: F32, *, seed: int, config: FirstPassConfig | None = None) -> xgb.Booster:
    """Fit the click classifier on raw first-pass feature rows (deterministic for a seed)."""
    config = config or FirstPassConfig()
    _check_width(features)
    params = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "max_depth": config.max_depth,
        "eta": config.learning_rate,
        "nthread": config.threads,
        "seed": seed,
    }
    data = xgb.DMatrix(features, label=clicks, nthread=config.threads)
    return xgb.train(params, data, num_boost_round=config.trees)


def predict_first_pass(booster: xgb.Booster, features: F32) -> F32:
    """P(click) for each row, float32 (n,)."""
    _check_width(features)
    return np.asarray(booster.inplace_predict(features), dtype=np.float32)


def evaluate_first_pass(
    booster: xgb.Booster, train: tuple[F32, F32], heldout: tuple[F32, F32], *, seconds: float
) -> FirstPassReport:
    return FirstPassReport(
        trees=booster.num_boosted_rounds(),
        train_rows=len(train[0]),
        heldout_rows=len(heldout[0]),
        train_auc=roc_auc(train[1], predict_first_pass(booster, train[0])),
        heldout_auc=roc_auc(heldout[1], predict_first_pass(booster, heldout[0])),
        seconds=seconds,
    )


def save_first_pass(booster: xgb.Booster, path: Path) -> None:
    """Write the model as UBJSON (`.ubj`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(path))


def load_first_pass(path: Path) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster
