"""Typed gateway settings from a YAML file and QUASAR_* environment variables (env wins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from engines.config import EnginesConfig
from gateway.capture import CaptureSettings
from gateway.tls import TlsSettings
from gateway.tracing import TracingSettings
from health.monitor import HealthSettings
from kvstore.config import StoreConfig


class GatewaySettings(BaseSettings):
    """Everything the gateway process needs. Units are in the names; validated at startup."""

    model_config = SettingsConfigDict(env_prefix="QUASAR_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int | None = Field(9464, ge=0, le=65535, description="Prometheus port; 0 picks one; null disables")
    world_dir: Path = Path("var/world")
    workflows_dir: Path | None = Field(
        None, description="directory of workflow YAML files; default: <world_dir>/workflows"
    )
    engines: EnginesConfig | None = Field(None, description="engines and routes; default: <world_dir>/engines/*.yaml")
    store: StoreConfig | None = Field(None, description="embedding store; default: embedded, at <world_dir>/store")
    stores: dict[str, StoreConfig] = Field(
        default_factory=dict,
        description="more stores by name (e.g. a Feast online store); a feature view names its store",
    )
    state_dir: Path | None = Field(
        None,
        description="where the releases in force (and health sketches) are kept across restarts and workers; "
        "null: nowhere (a restart serves the deployment's own routes again)",
    )
    health: HealthSettings = Field(
        HealthSettings(),
        description="online model health: sketches of every input feature and head, drift against the release's "
        "offline sketches (its state_dir defaults to <state_dir>)",
    )
    max_table_age_s: float | None = Field(None, gt=0, description="a table version in force older than this is stale")
    max_index_age_s: float | None = Field(None, gt=0, description="an ANN index in force older than this is stale")
    artifact_refresh_s: float = Field(60.0, gt=0, description="how often table and index ages are read")
    capture: CaptureSettings = Field(
        CaptureSettings(), description="sampled capture of requests and everything they read, for `quasar replay`"
    )
    workers: int | None = Field(
        None, ge=1, description="gateway processes on the port (SO_REUSEPORT); null: one per available core"
    )
    use_uvloop: bool = True
    default_count: int = Field(50, ge=1)
    max_count: int = Field(500, ge=1)
    max_context_entries: int = Field(16, ge=0)
    max_context_bytes: int = Field(2048, ge=0)
    default_timeout_s: float = Field(0.5, gt=0, description="request budget when the caller sends no deadline")
    max_request_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="largest request body accepted; larger ones get RESOURCE_EXHAUSTED"
    )
    max_in_flight: int = Field(256, ge=1, description="admission limit; beyond it calls get RESOURCE_EXHAUSTED")
    drain_grace_s: float = Field(10.0, ge=0, description="longest a SIGTERM waits for in-flight calls")
    drain_min_s: float = Field(
        1.0, ge=0, description="shortest drain: time for balancing clients' health checks to see NOT_SERVING"
    )
    offload_workers: int = Field(2, ge=1, description="threads for CPU-bound inference")
    offload_max_pending: int = Field(256, ge=1)
    log_level: str = "INFO"
    admin_token: SecretStr | None = Field(
        None, description="bearer token of the AdminService; unset: the admin service is not served at all"
    )
    log_format: Literal["json", "text"] = "json"
    access_log: bool = Field(True, description="one log line per request: id, workflow, outcome, latency")
    tracing: TracingSettings = TracingSettings()
    feature_time_s: float | None = Field(
        None, description="pin the clock time-based features (ages) read, epoch seconds: replays and tests; null: now"
    )
    # overload: an adaptive concurrency limit under max_in_flight, and a narrower second pass before it
    overload_initial_limit: int = Field(32, ge=1, description="concurrency limit at start (adapts, <= max_in_flight)")
    overload_min_limit: int = Field(8, ge=1, description="the adaptive limit never goes below this")
    overload_target_latency_s: float = Field(
        0.25, gt=0, description="requests slower than this shrink the concurrency limit; faster ones grow it"
    )
    overload_quality_latency_s: float = Field(
        0.1, gt=0, description="above this mean latency the second pass is narrowed (before any rejection)"
    )
    overload_narrowed_quality: float = Field(
        0.5, gt=0, le=1, description="fraction of merge.max_candidates ranked while narrowed"
    )
    overload_max_pending_calls: int = Field(
        32,
        ge=1,
        description="most calls grpc holds before the gateway takes them; more are refused at once, and from "
        "half of it a growing share is. Latency first: 1 (README, Overload)",
    )
    overload_max_active_calls: int | None = Field(
        None,
        ge=1,
        description="calls of any kind (health Watch streams too) a worker runs at once; a call grpc takes past "
        "it is refused RESOURCE_EXHAUSTED by grpc itself. null: no bound. Latency first: 1 (README, Overload)",
    )
    # security
    tls: TlsSettings | None = Field(None, description="TLS (mTLS with client_ca_file) on the port; null: plaintext")
    admin_requires_tls: bool = Field(
        False, description="serve the AdminService only over TLS: with no tls block, startup fails"
    )
    reflection: bool = Field(False, description="serve gRPC server reflection (it lists every service)")

    @model_validator(mode="after")
    def _admin_over_tls(self) -> GatewaySettings:
        if self.admin_requires_tls and self.tls is None:
            raise ValueError(
                "admin_requires_tls is set but no tls block is configured: the admin API would be plaintext"
            )
        return self

    @model_validator(mode="after")
    def _counts_consistent(self) -> GatewaySettings:
        if self.default_count > self.max_count:
            raise ValueError(f"default_count ({self.default_count}) exceeds max_count ({self.max_count})")
        if self.overload_quality_latency_s > self.overload_target_latency_s:
            # the second pass must narrow before the limit starts rejecting, not after
            raise ValueError(
                f"overload_quality_latency_s ({self.overload_quality_latency_s}) exceeds overload_target_latency_s "
                f"({self.overload_target_latency_s}): narrowing must come before rejecting"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: explicit arguments (CLI flags), then QUASAR_* env, then the YAML file.
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> GatewaySettings:
    """Settings from `config_file` (YAML), overridden by QUASAR_* env, overridden by non-None `overrides`."""
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"settings file {config_file} does not exist")

    class _FromFile(GatewaySettings):
        model_config = SettingsConfigDict(yaml_file=config_file)

    return _FromFile(**{k: v for k, v in overrides.items() if v is not None})
