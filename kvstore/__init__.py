"""Versioned embedding tables: the EmbeddingStore protocol, its stores and their configuration."""

from kvstore.base import EmbeddingStore, Lookup, TableInfo
from kvstore.config import EmbeddedStoreConfig, StoreConfig
from kvstore.embedded import EmbeddedStore

__all__ = ["EmbeddedStore", "EmbeddedStoreConfig", "EmbeddingStore", "Lookup", "StoreConfig", "TableInfo"]
