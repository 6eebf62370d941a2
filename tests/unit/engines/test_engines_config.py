from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engines._offload import Offloader
from engines.config import EnginesConfig, OnnxEngineConfig, TargetConfig, XGBoostEngineConfig, build_engines
from engines.onnx import OnnxEngine
from engines.xgboost import XGBoostEngine


def raw(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "engines": {
            "local_onnx": {"kind": "onnx", "models": {"feed_ranker": "/models/ranker.onnx"}, "intra_op_threads": 2},
            "local_xgb": {"kind": "xgboost", "models": {"fpr_jobs": "/models/fpr.ubj"}},
        },
        "routes": {
            "feed_ranker": {
                "targets": [{"engine": "local_onnx", "model": "feed_ranker", "timeout_s": 0.03}],
                "fallback": [{"engine": "local_xgb", "model": "fpr_jobs"}],
            }
        },
    }
    config.update(overrides)
    return config


def test_parses_engines_by_kind() -> None:
    config = EnginesConfig.model_validate(raw())
    onnx, xgb = config.engines["local_onnx"], config.engines["local_xgb"]
    assert isinstance(onnx, OnnxEngineConfig)
    assert onnx.intra_op_threads == 2
    assert onnx.models == {"feed_ranker": Path("/models/ranker.onnx")}
    assert isinstance(xgb, XGBoostEngineConfig)
    route = config.routes["feed_ranker"]
    assert route.targets[0].timeout_s == 0.03
    assert route.targets[0].weight == 1.0
    assert route.fallback[0].label == "local_xgb/fpr_jobs"


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValidationError, match="does not match any of the expected tags: 'onnx', 'xgboost'"):
        EnginesConfig.model_validate(raw(engines={"x": {"kind": "tensorrt", "models": {}}}))


def test_a_target_naming_an_undefined_engine_is_rejected_clearly() -> None:
    routes = {
        "feed_ranker": {
            "targets": [{"engine": "local_onnx", "model": "m"}],
            "fallback": [{"engine": "triton", "model": "m"}],
        }
    }
    with pytest.raises(ValidationError) as raised:
        EnginesConfig.model_validate(raw(routes=routes))
    assert (
        "route 'feed_ranker' fallback[0] names engine 'triton', which is not defined; "
        "engines: ['local_onnx', 'local_xgb']"
    ) in str(raised.value)


@pytest.mark.parametrize(
    "targets",
    [[], [{"engine": "local_onnx", "model": "m", "weight": 0}], [{"engine": "local_onnx", "model": "m", "weight": -1}]],
    ids=["no-targets", "zero-total-weight", "negative-weight"],
)
def test_routes_need_a_positive_weight(targets: list[dict[str, Any]]) -> None:
    with pytest.raises(ValidationError):
        EnginesConfig.model_validate(raw(routes={"r": {"targets": targets}}))


def test_unknown_fields_and_non_positive_timeouts_are_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TargetConfig.model_validate({"engine": "e", "model": "m", "timeout": 1})
    with pytest.raises(ValidationError, match="greater than 0"):
        TargetConfig(engine="e", model="m", timeout_s=0)


def test_target_label() -> None:
    assert TargetConfig(engine="triton", model="ranker", version="3").label == "triton/ranker/3"


def test_build_engines_does_no_io() -> None:
    offloader = Offloader(1, 1)
    try:
        engines = build_engines(EnginesConfig.model_validate(raw()), offloader)  # the model files do not exist
    finally:
        offloader.close()
    assert isinstance(engines["local_onnx"], OnnxEngine)
    assert engines["local_onnx"].name == "local_onnx"
    assert isinstance(engines["local_xgb"], XGBoostEngine)
    assert engines["local_xgb"].name == "local_xgb"
