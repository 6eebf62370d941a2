"""Which numbers of a model call health tracking watches: one column per float input feature, one per head.

Training (`health.offline`) and serving (`health.monitor`) both go through `watched_columns(...).values`,
so the offline and online sketches describe exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from features.registry import DerivedFeature, Feature, ViewFeature, feature_width
from features.signature import ModelSignature


@dataclass(frozen=True)
class FeatureSpan:
    """Columns [start, start + width) of input tensor `tensor` hold one feature, watched as one number per
    row: the `value` of a width-1 feature, the L2 `norm` of a vector, the `category` of a one-hot."""

    tensor: str
    start: int
    width: int
    watch: Literal["value", "norm", "category"] = "value"
    per_request: bool = False
    """A feature of the request (the member's): every row of a call holds the same value, so it is one
    observation per call, not one per candidate (counting it per row would weigh each member by the size
    of their candidate list and make the KS test believe it saw 600x the members it did)."""


@dataclass(frozen=True)
class WatchedColumns:
    """The watched names of one model, in column order: `features` (float input features, ids skipped)
    and `heads` (every head of every output), with where each is read from."""

    model: str
    features: tuple[str, ...]
    heads: tuple[str, ...]
    spans: tuple[FeatureSpan, ...]  # one per feature
    head_columns: tuple[tuple[str, int], ...]  # one (output name, column) per head

    @property
    def per_request(self) -> tuple[bool, ...]:
        """Per feature: whether it is one value per call (see `FeatureSpan.per_request`)."""
        return tuple(span.per_request for span in self.spans)

    def values(
        self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, len(features)) and (n, len(heads)) float32 matrices of one call's watched values.

        A width-1 feature is its column. A wider feature (an embedding vector) is watched through the L2
        norm of its columns: one number per row that moves when the vectors' distribution does (a scale or
        a location shift changes it), where watching each coordinate would multiply the sketches by the
        width and still say nothing about the vector as a whole. A one-hot feature's norm is always 1, so
        it is watched through its category instead: 1 + the index of its hot column, 0 when none is (a
        category the encoding does not know). ValueError when a tensor is missing, too narrow, or the
        outputs' row count differs from the inputs'.
        """
        n = _rows(inputs, outputs)
        features = np.empty((n, len(self.features)), np.float32)
        scalars: dict[str, tuple[list[int], list[int]]] = {}  # tensor -> (matrix columns, tensor columns)
        for i, span in enumerate(self.spans):
            tensor = _matrix(inputs, span.tensor, "input", span.start + span.width, n)
            if span.watch == "value":
                scalars.setdefault(span.tensor, ([], []))[0].append(i)
                scalars[span.tensor][1].append(span.start)
                continue
            block = tensor[:, span.start : span.start + span.width].astype(np.float32, copy=False)
            if span.watch == "norm":
                features[:, i] = np.linalg.norm(block, axis=1)
            else:
                features[:, i] = np.where(block.any(axis=1), block.argmax(axis=1) + 1, 0)
        for name, (into, columns) in scalars.items():
            tensor = _matrix(inputs, name, "input", max(columns) + 1, n)
            features[:, into] = tensor[:, columns]
        heads = np.empty((n, len(self.heads)), np.float32)
        by_output: dict[str, tuple[list[int], list[int]]] = {}
        for i, (output, column) in enumerate(self.head_columns):
            by_output.setdefault(output, ([], []))[0].append(i)
            by_output[output][1].append(column)
        for name, (into, columns) in by_output.items():
            heads[:, into] = _matrix(outputs, name, "output", max(columns) + 1, n)[:, columns]
        return features, heads


def watched_columns(signature: ModelSignature, request_entities: Collection[str] = ()) -> WatchedColumns:
    """The float features of `signature`'s inputs (id features and int64 tensors skipped) and its heads.
    Stored features of `request_entities` (the registry's entities keyed by the request) are per request."""
    names: list[str] = []
    spans: list[FeatureSpan] = []
    for tensor in signature.inputs:
        for feature, start, stop in tensor.columns():
            if tensor.dtype != "int64" and not feature.is_ids:
                names.append(feature.name)
                per_request = isinstance(feature, ViewFeature) and feature.view.entity in request_entities
                spans.append(
                    FeatureSpan(
                        tensor=tensor.name,
                        start=start,
                        width=stop - start,
                        watch=_watch(feature),
                        per_request=per_request,
                    )
                )
    head_columns = tuple(
        (output, column) for output, heads in signature.outputs.items() for column in range(len(heads))
    )
    return WatchedColumns(
        model=signature.model,
        features=tuple(names),
        heads=signature.heads,
        spans=tuple(spans),
        head_columns=head_columns,
    )


def _watch(feature: Feature) -> Literal["value", "norm", "category"]:
    if isinstance(feature, DerivedFeature) and feature.decl.transform == "one_hot":
        return "category"
    return "value" if feature_width(feature) == 1 else "norm"


def _rows(inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> int:
    counts = {len(a) for a in (*inputs.values(), *outputs.values())}
    if len(counts) > 1:
        raise ValueError(f"tensors of one call have different row counts: {sorted(counts)}")
    return counts.pop() if counts else 0


def _matrix(tensors: Mapping[str, np.ndarray], name: str, kind: str, width: int, n: int) -> np.ndarray:
    """`tensors[name]` as (n, columns): a (n,) tensor (a vector input, a single-head output) is one column."""
    if name not in tensors:
        raise ValueError(f"no {kind} tensor {name!r} (got {sorted(tensors)})")
    tensor = np.asarray(tensors[name])
    matrix = tensor[:, None] if tensor.ndim == 1 else tensor
    if matrix.ndim != 2 or matrix.shape[1] < width:
        raise ValueError(f"{kind} tensor {name!r} has shape {tensor.shape}, needs (n, >= {width})")
    return matrix
