"""Typed engine and route configuration, validated at startup.

Each backend has one config class, told apart by `kind`, that knows how to build its engine. Adding a
backend is one class here (with its `build`) plus one member in `EngineConfig`. Backend modules are
imported inside `build`, so a config never drags in an SDK it does not use.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

if TYPE_CHECKING:
    from engines._offload import Offloader
    from engines.base import Engine


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnnxEngineConfig(_Config):
    """ONNX Runtime in process. `models`: model name -> .onnx file."""

    kind: Literal["onnx"] = "onnx"
    models: dict[str, Path]
    intra_op_threads: PositiveInt = 1
    providers: list[str] | None = None  # None: CUDA first when available, else CPU

    def build(self, name: str, offloader: Offloader) -> Engine:
        from engines.onnx import OnnxEngine

        return OnnxEngine(
            name, self.models, offloader, intra_op_threads=self.intra_op_threads, providers=self.providers
        )


class XGBoostEngineConfig(_Config):
    """XGBoost in process. `models`: model name -> booster file (JSON/UBJSON)."""

    kind: Literal["xgboost"] = "xgboost"
    models: dict[str, Path]
    nthread: PositiveInt = 1

    def build(self, name: str, offloader: Offloader) -> Engine:
        from engines.xgboost import XGBoostEngine

        return XGBoostEngine(name, self.models, offloader, nthread=self.nthread)


# Later backends ("triton", "tfserving", "ray") join this union, one class each.
EngineConfig = Annotated[OnnxEngineConfig | XGBoostEngineConfig, Field(discriminator="kind")]


class OffloadConfig(_Config):
    """The shared inference thread pool (see `engines._offload.Offloader`)."""

    max_workers: PositiveInt = 2
    max_pending: Annotated[int, Field(ge=0)] = 64


class TargetConfig(_Config):
    """One concrete model on one engine. `weight` is relative among a route's targets (0 drains it);
    `timeout_s` caps a call to this target below the request's remaining budget (None: no own cap)."""

    engine: str
    model: str
    version: str | None = None
    weight: Annotated[float, Field(ge=0.0)] = 1.0
    timeout_s: PositiveFloat | None = None

    @property
    def label(self) -> str:
        """'engine/model[/version]', as reported in `ModelCall.target` and degraded reasons."""
        base = f"{self.engine}/{self.model}"
        return base if self.version is None else f"{base}/{self.version}"


class RouteConfig(_Config):
    """Where a logical model goes: one of `targets` by weight (sticky per routing key), then `fallback`
    in order when that fails."""

    targets: Annotated[list[TargetConfig], Field(min_length=1)]
    fallback: list[TargetConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_weight(self) -> RouteConfig:
        if sum(target.weight for target in self.targets) <= 0:
            raise ValueError("at least one target needs a weight > 0")
        return self


class EnginesConfig(_Config):
    """All engines by name, and the routes from logical model names to them."""

    engines: dict[str, EngineConfig]
    routes: dict[str, RouteConfig]
    offload: OffloadConfig = OffloadConfig()

    @model_validator(mode="after")
    def _targets_name_engines(self) -> EnginesConfig:
        problems = undefined_engines(self.routes, self.engines)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def undefined_engines(routes: Mapping[str, RouteConfig], engines: Collection[str]) -> list[str]:
    """One message per route target naming an engine that is not in `engines`."""
    known = sorted(engines)
    problems = []
    for route_name, route in routes.items():
        for role, targets in (("targets", route.targets), ("fallback", route.fallback)):
            for index, target in enumerate(targets):
                if target.engine not in engines:
                    problems.append(
                        f"route {route_name!r} {role}[{index}] names engine {target.engine!r}, "
                        f"which is not defined; engines: {known}"
                    )
    return problems


def build_engines(config: EnginesConfig, offloader: Offloader) -> dict[str, Engine]:
    """One engine per configured name, not started (no I/O here; `start()` loads)."""
    return {name: engine.build(name, offloader) for name, engine in config.engines.items()}
