"""Config of the remote engines (Triton, TF Serving): parsed by `kind`, validated, built without I/O."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from engines._offload import Offloader
from engines.config import EnginesConfig, TFServingEngineConfig, TritonEngineConfig, build_engines
from engines.tfserving import TFServingEngine
from engines.triton import TritonEngine


def raw(**engines: dict[str, Any]) -> dict[str, Any]:
    return {
        "engines": engines,
        "routes": {"feed_ranker": {"targets": [{"engine": name, "model": "feed_ranker"} for name in engines]}},
    }


def test_parses_both_kinds_and_builds_engines_without_connecting() -> None:
    config = EnginesConfig.model_validate(
        raw(
            triton={"kind": "triton", "url": "triton:8001", "models": {"feed_ranker": "ranker_dense"}},
            tfs={"kind": "tfserving", "url": "tfs:8500", "model_name": "feed_ranker", "version_label": "stable"},
        )
    )
    assert isinstance(config.engines["triton"], TritonEngineConfig)
    assert isinstance(config.engines["tfs"], TFServingEngineConfig)
    offloader = Offloader(max_workers=1, max_pending=1)
    try:
        engines = build_engines(config, offloader)  # no server exists: constructors must not connect
    finally:
        offloader.close()
    assert isinstance(engines["triton"], TritonEngine)
    assert isinstance(engines["tfs"], TFServingEngine)
    assert engines["tfs"].signature_name == "serving_default"


def test_triton_models_as_a_list_keep_their_names_and_the_token_becomes_a_header() -> None:
    config = TritonEngineConfig.model_validate(
        {"url": "t:8001", "models": ["feed_ranker"], "access_token": "s3cret", "headers": {"x-team": "feed"}}
    )
    assert "s3cret" not in repr(config), "the token never shows in logs of the config"
    engine = config.build("triton", None)  # type: ignore[arg-type]  # remote engines take no offloader
    assert isinstance(engine, TritonEngine)
    assert engine._remote == {"feed_ranker": "feed_ranker"}
    assert engine._headers == {"x-team": "feed", "triton-grpc-protocol-triton-access-token": "s3cret"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"version": 1, "version_label": "stable"}, "not both"),
        ({"version": 0}, "greater than 0"),
        ({"signature": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_tfserving_config_is_validated(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TFServingEngineConfig.model_validate({"url": "tfs:8500", "model_name": "m", **fields})


def test_triton_config_needs_models() -> None:
    with pytest.raises(ValidationError, match="models"):
        TritonEngineConfig.model_validate({"url": "t:8001"})
