"""Typed store configuration, discriminated by `kind`, validated at startup.

Adding a store kind is one class with its `build` plus one member in `StoreConfig`; backend modules are
imported inside `build`, so a config never drags in a client it does not use. Every kind also takes a
`cache` (hot tables kept in process) and a `version_policy` (table versions pinned by the model);
`build_store` composes them around the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)

from kvstore.pinning import VersionPolicy

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from kvstore.admin import TableAdmin
    from kvstore.base import EmbeddingStore


class CacheConfig(BaseModel):
    """An in-process LRU with TTL for hot tables (`kvstore.cache.CachedStore`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tables: tuple[str, ...] = ("member", "member_features")
    max_entries: PositiveInt = Field(100_000, description="rows kept per table")
    ttl_s: PositiveFloat = 300.0


class _StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cache: CacheConfig | None = Field(None, description="hot tables kept in process; null: no cache")
    version_policy: VersionPolicy = VersionPolicy()


class EmbeddedStoreConfig(_StoreConfig):
    """Tables in local files under `root` (see `kvstore.embedded`)."""

    kind: Literal["embedded"] = "embedded"
    root: Path
    max_versions_per_table: PositiveInt = 3

    def build(self, name: str = "embedded") -> EmbeddingStore:
        """The store, not started (no I/O here)."""
        from kvstore.embedded import EmbeddedStore

        return EmbeddedStore(self.root, name, max_versions_per_table=self.max_versions_per_table)


class RedisTlsConfig(BaseModel):
    """TLS to Redis. `ca_file`: PEM roots that sign the server's certificate (None: the system's);
    `cert_file` + `key_file` (both or neither): a client certificate (Redis's `tls-auth-clients`);
    `server_name`: the name checked against the certificate instead of the host connected to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> RedisTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: give both cert_file and key_file (client certificate), or neither")
        return self


class RedisStoreConfig(_StoreConfig):
    """Tables in Redis or a Redis Cluster (detected at start), see `kvstore.redis`.

    `timeout_s` bounds a call whose caller passes no timeout (the request path always passes its
    remaining budget); `pool_size` is the connections per node. Security: `username`/`password` (an ACL
    user) override the URL's; `tls` or a `rediss://` URL connects over TLS. The password never appears
    in repr (a password inside `url` is shown as `***`).
    """

    kind: Literal["redis"] = "redis"
    url: str = Field(description="redis[s]://[[user]:password@]host:port/db; any node of a cluster; rediss: TLS")
    pool_size: PositiveInt = 16
    timeout_s: PositiveFloat = 0.1
    connect_timeout_s: PositiveFloat = 0.1
    admin_timeout_s: PositiveFloat = 30.0
    prefix: str = "qe"
    buckets: PositiveInt = Field(16, description="buckets (cluster slots) per version written")
    mget_chunk: PositiveInt = 4096
    # security
    username: str | None = Field(None, description="ACL user (overrides the URL's)")
    password: SecretStr | None = Field(None, description="its password (overrides the URL's); never logged")
    tls: RedisTlsConfig | None = Field(None, description="TLS to Redis; null: as the URL's scheme says")

    @field_validator("url")
    @classmethod
    def _parseable(cls, url: str) -> str:
        from kvstore._redis_wire import RedisAddress

        RedisAddress.parse(url)
        return url

    def __repr_args__(self) -> Any:
        # A password written into the URL must not reach a log line or a traceback through repr.
        from kvstore._redis_wire import redact_url

        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "url" else value

    def build(self, name: str = "redis") -> EmbeddingStore:
        """The store, not started (no I/O here)."""
        return self.build_admin(name)

    def build_admin(self, name: str = "redis") -> TableAdmin:
        """The store with its writer methods (loaders, operators), not started."""
        from kvstore.redis import RedisStore

        return RedisStore(
            self.url,
            name,
            pool_size=self.pool_size,
            timeout_s=self.timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            admin_timeout_s=self.admin_timeout_s,
            prefix=self.prefix,
            buckets=self.buckets,
            mget_chunk=self.mget_chunk,
            username=self.username,
            password=self.password.get_secret_value() if self.password is not None else None,
            tls=self.tls,
        )


from kvstore.feast_store import FeastStoreConfig  # noqa: E402  (it extends _StoreConfig, above)

StoreConfig = Annotated[EmbeddedStoreConfig | RedisStoreConfig | FeastStoreConfig, Field(discriminator="kind")]


def build_store(
    config: EmbeddedStoreConfig | RedisStoreConfig | FeastStoreConfig,
    *,
    name: str | None = None,
    registry: CollectorRegistry | None = None,
    manifest: Path | None = None,
) -> EmbeddingStore:
    """The serving stack for `config`, not started: the store, its cache (when configured), lookup
    metrics, and the version policy outermost (pins read from `config.version_policy.manifest`, else
    `manifest`, at start). Metrics go to `registry` (a private one when None)."""
    from kvstore.cache import CachedStore
    from kvstore.instrumented import InstrumentedStore
    from kvstore.pinning import PinnedStore

    store = config.build() if name is None else config.build(name)
    if config.cache is not None:
        cache = config.cache
        store = CachedStore(
            store, tables=cache.tables, max_entries=cache.max_entries, ttl_s=cache.ttl_s, registry=registry
        )
    store = InstrumentedStore(store, registry=registry)
    policy = config.version_policy
    if policy.mode != "off":
        store = PinnedStore(store, mode=policy.mode, manifest=policy.manifest or manifest, registry=registry)
    return store
