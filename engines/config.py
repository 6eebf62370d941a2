"""Typed engine and route configuration, validated at startup.

Each backend has one config class, told apart by `kind`, that knows how to build its engine. Adding a
backend is one class here (with its `build`) plus one member in `EngineConfig`. Backend modules are
imported inside `build`, so a config never drags in an SDK it does not use.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, SecretStr, model_validator

from engines._local import RunOn
from engines.candidate_config import CandidateServiceConfig
from engines.compiled_trees import Predictor
from engines.tls_config import GrpcTlsConfig

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
    run_on: RunOn = "auto"  # see engines._local.RunOn

    def build(self, name: str, offloader: Offloader) -> Engine:
        from engines.onnx import OnnxEngine

        return OnnxEngine(
            name,
            self.models,
            offloader,
            intra_op_threads=self.intra_op_threads,
            providers=self.providers,
            run_on=self.run_on,
        )


class XGBoostEngineConfig(_Config):
    """XGBoost in process. `models`: model name -> booster file (JSON/UBJSON)."""

    kind: Literal["xgboost"] = "xgboost"
    models: dict[str, Path]
    nthread: PositiveInt = 1
    run_on: RunOn = "auto"  # see engines._local.RunOn (auto: the loop)
    # compiled: the trees compiled to native code at load (engines.compiled_trees), XGBoost's if that fails
    predictor: Predictor = "xgboost"
    compile_cache_dir: Path | None = None  # default: $XDG_CACHE_HOME/quasar/compiled-trees

    def build(self, name: str, offloader: Offloader) -> Engine:
        from engines.xgboost import XGBoostEngine

        return XGBoostEngine(
            name,
            self.models,
            offloader,
            nthread=self.nthread,
            run_on=self.run_on,
            predictor=self.predictor,
            compile_cache_dir=self.compile_cache_dir,
        )


class TritonEngineConfig(_Config):
    """A Triton Inference Server's gRPC endpoint. `url`: host:port. `models`: model name callers use ->
    the model's name on Triton (a list: the same names). `headers` go with every call; `access_token`
    adds the header PyTriton's restricted endpoints expect (`triton-grpc-protocol-triton-access-token`)."""

    kind: Literal["triton"] = "triton"
    url: str
    models: dict[str, str] | list[str]
    headers: dict[str, str] = Field(default_factory=dict)
    access_token: SecretStr | None = None
    startup_timeout_s: PositiveFloat = 10.0
    tls: GrpcTlsConfig | None = Field(None, description="TLS to the server; null: plaintext")

    def build(self, name: str, offloader: Offloader) -> Engine:
        from engines.triton import TritonEngine

        models = self.models if isinstance(self.models, dict) else {model: model for model in self.models}
        headers = dict(self.headers)
        if self.access_token is not None:
            headers["triton-grpc-protocol-triton-access-token"] = self.access_token.get_secret_value()
        return TritonEngine(
            name, self.url, models, headers=headers, startup_timeout_s=self.startup_timeout_s, tls=self.tls
        )


class TFServingEngineConfig(_Config):
    """One model on a TensorFlow Serving gRPC endpoint (`url`: host:port). `version` or `version_label`
    (not both) is the default servable; neither: the server's latest. A target's `version` overrides it."""

    kind: Literal["tfserving"] = "tfserving"
    url: str
    model_name: str
    version: PositiveInt | None = None
    version_label: str | None = None
    signature_name: str = "serving_default"
    startup_timeout_s: PositiveFloat = 10.0
    tls: GrpcTlsConfig | None = Field(None, description="TLS to the server; null: plaintext")

    @model_validator(mode="after")
    def _one_version_selector(self) -> TFServingEngineConfig:
        if self.version is not None and self.version_label is not None:
            raise ValueError("give version or version_label, not both")
        return self

    def build(self, name: str, offloader: Offloader) -> Engine:
        from engines.tfserving import TFServingEngine

        return TFServingEngine(
            name,
            self.url,
            self.model_name,
            version=self.version,
            version_label=self.version_label,
            signature_name=self.signature_name,
            startup_timeout_s=self.startup_timeout_s,
            tls=self.tls,
        )


class RayServeEngineConfig(_Config):
    """XGBoost boosters served by a Ray Serve deployment with request batching (`engines.ray_serve`).

    `address`: "local" starts a Ray instance in this process, "auto" joins the cluster on this machine,
    "ray://host:10001" connects through Ray Client; a Ray already initialised in this process is used
    as it is. With `models` (name -> booster file), `start()` deploys application `app_name` itself
    (`num_replicas` replicas of `replica_num_cpus` CPUs; batches of at most `max_batch_size` calls,
    waiting at most `batch_wait_timeout_s` to fill one); without, it calls the models of an application
    deployed beforehand (`quasar ray deploy`).
    """

    kind: Literal["ray"] = "ray"
    address: str = "auto"
    app_name: str = "quasar-xgboost"
    deployment: str = "XGBoostScorer"
    models: dict[str, Path] = Field(default_factory=dict)
    num_replicas: PositiveInt = 1
    replica_num_cpus: Annotated[float, Field(ge=0.0)] = 1.0
    max_batch_size: PositiveInt = 32
    batch_wait_timeout_s: Annotated[float, Field(ge=0.0)] = 0.002
    nthread: PositiveInt = 1

    def build(self, name: str, offloader: Offloader) -> Engine:
        from engines.ray_serve import RayServeEngine

        return RayServeEngine(name, self, offloader)


EngineConfig = Annotated[
    OnnxEngineConfig | XGBoostEngineConfig | TritonEngineConfig | TFServingEngineConfig | RayServeEngineConfig,
    Field(discriminator="kind"),
]


class BreakerConfig(_Config):
    """A target's circuit breaker (see `engines.breaker.Breaker`).

    Opens after `consecutive_failures` failures in a row, or when at least `min_calls` of the last
    `window` calls finished and the share of failures among them reaches `failure_rate` (None: only the
    consecutive count). Stays open `open_s`, then lets `half_open_probes` calls through: all succeeding
    closes it, any failing re-opens it.
    """

    consecutive_failures: PositiveInt = 5
    failure_rate: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    window: PositiveInt = 20
    min_calls: PositiveInt = 10
    open_s: PositiveFloat = 5.0
    half_open_probes: PositiveInt = 1


class TargetConfig(_Config):
    """One concrete model on one engine. `weight` is relative among a route's targets (0 drains it);
    `timeout_s` caps a call to this target below the request's remaining budget (None: no own cap);
    `breaker` guards the target (None: no breaker). Routes naming the same target share its breaker,
    so they must agree on its config."""

    engine: str
    model: str
    version: str | None = None
    weight: Annotated[float, Field(ge=0.0)] = 1.0
    timeout_s: PositiveFloat | None = None
    breaker: BreakerConfig | None = BreakerConfig()

    @property
    def label(self) -> str:
        """'engine/model[/version]', as reported in `ModelCall.target` and degraded reasons."""
        base = f"{self.engine}/{self.model}"
        return base if self.version is None else f"{base}/{self.version}"


class RouteConfig(_Config):
    """Where a logical model goes: one of `targets` by weight (sticky per routing key), then `fallback`
    in order when that fails. Every `shadow` target is also called, in the background: never answered
    from, never waited for; beyond `max_shadow_in_flight` unfinished shadow calls of this route, new
    ones are dropped (and counted). Each shadow answer is compared with the caller's answer
    (`engines.shadow_diff`), the top-K overlap over the `shadow_top_k` highest-scored rows."""

    targets: Annotated[list[TargetConfig], Field(min_length=1)]
    fallback: list[TargetConfig] = Field(default_factory=list)
    shadow: list[TargetConfig] = Field(default_factory=list)
    max_shadow_in_flight: PositiveInt = 16
    shadow_top_k: PositiveInt = 50

    @model_validator(mode="after")
    def _some_weight(self) -> RouteConfig:
        if sum(target.weight for target in self.targets) <= 0:
            raise ValueError("at least one target needs a weight > 0")
        return self


class EnginesConfig(_Config):
    """All engines by name, and the routes from logical model names to them."""

    engines: dict[str, EngineConfig]
    routes: dict[str, RouteConfig]
    candidate_services: dict[str, CandidateServiceConfig] = Field(
        default_factory=dict, description="remote candidate services (quasar.v1.CandidateService) by name"
    )

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
        for role, targets in (("targets", route.targets), ("fallback", route.fallback), ("shadow", route.shadow)):
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
