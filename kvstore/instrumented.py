"""`InstrumentedStore`: lookup latency, missing ids and errors of any `EmbeddingStore`, as Prometheus metrics.

- `quasar_kvstore_lookup_seconds{store,table}`: every lookup, successful or not.
- `quasar_kvstore_missing_ids_total{table}`: ids asked for that had no row (callers serve defaults).
- `quasar_kvstore_lookup_errors_total{store,table,error}`: failed lookups by error class.

Label values are bounded: store names come from config, tables from the workflow's fixed table list.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Histogram

from kvstore._decorator import StoreDecorator
from kvstore.base import EmbeddingStore, Lookup

# Lookups take 0.1 ms (a cache hit, the embedded store) to tens of ms (a bulk read from a busy Redis).
LOOKUP_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class InstrumentedStore(StoreDecorator):
    def __init__(self, inner: EmbeddingStore, *, registry: CollectorRegistry | None = None) -> None:
        super().__init__(inner)
        registry = registry if registry is not None else CollectorRegistry()
        self._seconds = Histogram(
            "quasar_kvstore_lookup_seconds",
            "Time of one bulk embedding lookup.",
            ("store", "table"),
            buckets=LOOKUP_BUCKETS_S,
            registry=registry,
        )
        self._missing = Counter(
            "quasar_kvstore_missing_ids_total", "Ids looked up that had no row.", ("table",), registry=registry
        )
        self._bound_seconds: dict[str, Histogram] = {}
        self._errors = Counter(
            "quasar_kvstore_lookup_errors_total", "Failed lookups.", ("store", "table", "error"), registry=registry
        )

    async def lookup(
        self, table: str, ids: npt.NDArray[np.int64], *, version: str, timeout_s: float | None = None
    ) -> Lookup:
        started = time.perf_counter()
        try:
            result = await self.inner.lookup(table, ids, version=version, timeout_s=timeout_s)
        except Exception as error:
            self._errors.labels(self.name, table, type(error).__name__).inc()
            raise
        finally:
            seconds = self._bound_seconds.get(table)
            if seconds is None:  # bound once per table: labels() costs more than the observation
                seconds = self._bound_seconds[table] = self._seconds.labels(self.name, table)
            seconds.observe(time.perf_counter() - started)
        if missing := result.missing:
            self._missing.labels(table).inc(missing)
        return result


if TYPE_CHECKING:
    _conforms: type[EmbeddingStore] = InstrumentedStore
