"""Versioned embedding tables: the EmbeddingStore protocol, its stores, their decorators and configuration.

Stores: `EmbeddedStore` (local files), `kvstore.redis.RedisStore` (Redis or a Redis Cluster; imported only
where used, as it needs the redis extra). Decorators composed by `build_store`: `CachedStore` (hot tables in
process), `InstrumentedStore` (lookup metrics), `PinnedStore` (table versions pinned by the model). Writing
versions: `TableAdmin` and `kvstore.loader`.
"""

from kvstore.admin import EmbeddedAdmin, TableAdmin, VersionInfo
from kvstore.base import EmbeddingStore, Lookup, TableInfo
from kvstore.cache import CachedStore
from kvstore.config import CacheConfig, EmbeddedStoreConfig, RedisStoreConfig, StoreConfig, build_store
from kvstore.embedded import EmbeddedStore
from kvstore.instrumented import InstrumentedStore
from kvstore.pinning import PinnedStore, VersionMismatch, VersionPolicy

__all__ = [
    "CacheConfig",
    "CachedStore",
    "EmbeddedAdmin",
    "EmbeddedStore",
    "EmbeddedStoreConfig",
    "EmbeddingStore",
    "InstrumentedStore",
    "Lookup",
    "PinnedStore",
    "RedisStoreConfig",
    "StoreConfig",
    "TableAdmin",
    "TableInfo",
    "VersionInfo",
    "VersionMismatch",
    "VersionPolicy",
    "build_store",
]
