"""Typed store configuration, discriminated by `kind`, validated at startup.

Adding a store kind ("redis") is one class with its `build` plus one member in `StoreConfig`; backend
modules are imported inside `build`, so a config never drags in a client it does not use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

if TYPE_CHECKING:
    from kvstore.base import EmbeddingStore


class EmbeddedStoreConfig(BaseModel):
    """Tables in local files under `root` (see `kvstore.embedded`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["embedded"] = "embedded"
    root: Path
    max_versions_per_table: PositiveInt = 3

    def build(self, name: str = "embedded") -> EmbeddingStore:
        """The store, not started (no I/O here)."""
        from kvstore.embedded import EmbeddedStore

        return EmbeddedStore(self.root, name, max_versions_per_table=self.max_versions_per_table)


# A later "redis" kind joins as `EmbeddedStoreConfig | RedisStoreConfig`.
StoreConfig = Annotated[EmbeddedStoreConfig, Field(discriminator="kind")]
