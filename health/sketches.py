"""Mergeable quantile sketches of one model's watched columns: one KLL sketch per feature and per head."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import orjson
from datasketches import kll_floats_sketch

DEFAULT_K = 4000
"""KLL's size parameter. The sketch-aware KS test (datasketches' threshold, see `health.drift`) rejects
when two CDFs are further apart than c(p) * sqrt((r1 + r2) / (r1 * r2)) + eps1 + eps2, with r the values
a sketch retains (not the values it saw) and eps its rank error; k bounds both. At k=200 (datasketches'
default: eps ~1.3%, ~600 retained) it cannot see less than a distance of ~0.15. At k=4000 (eps ~0.07%,
~10k retained beyond 50k values) it sees ~0.03 at p=0.001: a 0.1 sigma shift of a Gaussian moves the CDF
by ~0.04. A serialized sketch is ~40 KB."""

_FORMAT = "quasar.health.sketches/1"

Kind = Literal["feature", "head"]


class ModelSketches:
    """A KLL float sketch per watched name (features first, then heads), the rows seen, and per column the
    non-finite values skipped (NaN and infinities never enter a sketch). Not thread-safe: one owner."""

    def __init__(self, features: tuple[str, ...], heads: tuple[str, ...], k: int = DEFAULT_K) -> None:
        names = (*features, *heads)
        if len(set(features)) != len(features) or len(set(heads)) != len(heads):
            raise ValueError(f"duplicate watched names in {list(names)}")
        self.features = features
        self.heads = heads
        self.k = k
        self.rows = 0
        self.nonfinite = np.zeros(len(names), np.int64)
        self._sketches = [kll_floats_sketch(k) for _ in names]

    @property
    def n(self) -> int:
        """Rows seen (every update's row count, merges included)."""
        return self.rows

    def sketch(self, kind: Kind, name: str) -> kll_floats_sketch:
        """The sketch of feature or head `name` (`kind` is 'feature' or 'head'); KeyError when not watched."""
        names = self.features if kind == "feature" else self.heads
        if name not in names:
            raise KeyError(f"no {kind} {name!r} in the sketches (features {self.features}, heads {self.heads})")
        offset = 0 if kind == "feature" else len(self.features)
        return self._sketches[offset + names.index(name)]

    def named(self) -> list[tuple[Kind, str, kll_floats_sketch]]:
        """(kind, name, sketch) of every column, features first."""
        split = len(self.features)
        named: list[tuple[Kind, str, kll_floats_sketch]] = [
            ("feature", n, s) for n, s in zip(self.features, self._sketches[:split], strict=True)
        ]
        return named + [("head", n, s) for n, s in zip(self.heads, self._sketches[split:], strict=True)]

    def update(self, features: np.ndarray, heads: np.ndarray, *, once: Sequence[bool] = ()) -> None:
        """Add the rows of `features` (n, len(features)) and `heads` (n, len(heads)); non-finite values are
        skipped and counted per column. Feature columns flagged in `once` hold one value per call (every row
        the same): only their first row is added."""
        if features.ndim != 2 or heads.ndim != 2 or features.shape[0] != heads.shape[0]:
            raise ValueError(f"expected (n, F) and (n, H) matrices, got {features.shape} and {heads.shape}")
        if features.shape[1] != len(self.features) or heads.shape[1] != len(self.heads):
            raise ValueError(
                f"expected {len(self.features)} feature and {len(self.heads)} head columns, "
                f"got {features.shape[1]} and {heads.shape[1]}"
            )
        matrix = np.concatenate([features, heads], axis=1).astype(np.float32, copy=False)
        finite = np.isfinite(matrix)
        self.nonfinite += (~finite).sum(axis=0)
        for j, sketch in enumerate(self._sketches):
            column = matrix[:1, j] if j < len(once) and once[j] else matrix[:, j]
            kept = finite[: len(column), j]
            sketch.update(np.ascontiguousarray(column if kept.all() else column[kept]))
        self.rows += matrix.shape[0]

    def merge(self, other: ModelSketches) -> None:
        """Add `other`'s rows; ValueError unless it watches the same names."""
        if other.features != self.features or other.heads != self.heads:
            raise ValueError(
                f"cannot merge sketches of different columns: {self.features + self.heads} "
                f"and {other.features + other.heads}"
            )
        for mine, theirs in zip(self._sketches, other._sketches, strict=True):
            mine.merge(theirs)
        self.rows += other.rows
        self.nonfinite += other.nonfinite

    def empty_like(self) -> ModelSketches:
        """Fresh sketches of the same names and k."""
        return ModelSketches(self.features, self.heads, self.k)

    def serialize(self) -> bytes:
        """A JSON envelope: names, k, rows, non-finite counts and each sketch's own serialization (base64)."""
        return orjson.dumps(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "k": self.k,
            "features": list(self.features),
            "heads": list(self.heads),
            "rows": self.rows,
            "nonfinite": self.nonfinite.tolist(),
            "sketches": [base64.b64encode(s.serialize()).decode("ascii") for s in self._sketches],
        }

    @classmethod
    def deserialize(cls, data: bytes) -> ModelSketches:
        """The sketches `serialize` wrote; ValueError when `data` is not such an envelope."""
        try:
            envelope = orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"not a sketches envelope: {error}") from None
        return cls.from_json(envelope)

    @classmethod
    def from_json(cls, envelope: Any) -> ModelSketches:
        if not isinstance(envelope, dict) or envelope.get("format") != _FORMAT:
            raise ValueError(f"not a sketches envelope (expected format {_FORMAT!r})")
        try:
            features = tuple(str(n) for n in envelope["features"])
            heads = tuple(str(n) for n in envelope["heads"])
            sketches = cls(features, heads, int(envelope["k"]))
            blobs = envelope["sketches"]
            nonfinite = np.asarray(envelope["nonfinite"], np.int64)
            if len(blobs) != len(features) + len(heads) or nonfinite.shape != sketches.nonfinite.shape:
                raise ValueError("the envelope's column counts disagree")
            sketches._sketches = [kll_floats_sketch.deserialize(base64.b64decode(b, validate=True)) for b in blobs]
            sketches.rows = int(envelope["rows"])
            sketches.nonfinite = nonfinite
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            # datasketches reports a bad buffer as IndexError, RuntimeError or ValueError
            raise ValueError(f"corrupt sketches envelope: {error}") from None
        return sketches
