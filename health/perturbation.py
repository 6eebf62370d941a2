"""Perturbations: what a replay changes in the captured inputs before scoring them.

A `Perturbation` makes a replay score modified inputs through the same scorer, to see how much the
ranking depends on something: `drop-feature:NAME` (the feature's columns set to its declared default),
`drop-source:NAME` (rows whose item came only from that source removed), `zero-table:TABLE` (the columns
of every feature read from the table, derived features computed from it included, set to 0). Column
perturbations become `ColumnEdit`s of a model's input tensors (`column_edits`, `apply_column_edits`); a
drop-source selects the rows to keep (`rows_only_from`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast, get_args

import numpy as np
import numpy.typing as npt

from features.errors import nearest
from features.registry import DerivedFeature, Feature, FeatureRegistry, ViewFeature
from features.signature import ModelSignature
from health.replay_error import ReplayError

PerturbKind = Literal["drop-feature", "drop-source", "zero-table"]
PERTURB_KINDS: tuple[str, ...] = get_args(PerturbKind)


@dataclass(frozen=True)
class Perturbation:
    """What to change in the captured inputs before scoring them; see the module doc."""

    kind: PerturbKind
    name: str

    @classmethod
    def parse(cls, spec: str) -> Perturbation:
        """'KIND:NAME' (drop-feature:NAME, drop-source:NAME, zero-table:TABLE); ValueError otherwise."""
        kind, _, name = spec.partition(":")
        if kind not in PERTURB_KINDS or not name:
            raise ValueError(
                f"bad perturbation {spec!r}: expected drop-feature:NAME, drop-source:NAME or zero-table:TABLE"
                f"{nearest(kind, PERTURB_KINDS)}"
            )
        return cls(cast(PerturbKind, kind), name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class ColumnEdit:
    """Columns [start, stop) of input tensor `tensor` set to `values` (one per column)."""

    tensor: str
    start: int
    stop: int
    values: np.ndarray


@dataclass(frozen=True)
class _Span:
    tensor: str
    start: int
    stop: int
    feature: Feature


def _spans(signature: ModelSignature) -> list[_Span]:
    return [
        _Span(tensor.name, start, stop, feature)
        for tensor in signature.inputs
        for feature, start, stop in tensor.columns()
    ]


def _tables(feature: Feature) -> frozenset[str]:
    """The store tables a feature's values are read from (through every input of a derived feature)."""
    if isinstance(feature, ViewFeature):
        return frozenset({feature.view.table})
    if isinstance(feature, DerivedFeature):
        return frozenset().union(*(_tables(f) for f in feature.inputs))
    return frozenset()


def column_edits(perturbation: Perturbation, signature: ModelSignature, registry: FeatureRegistry) -> list[ColumnEdit]:
    """The input columns a drop-feature or zero-table perturbation changes in calls of `signature`'s model.

    ReplayError for a name the registry does not know (with the nearest names), a feature the model does
    not take as an input, a feature with no declared default (derived and built-in ones), or a table the
    model reads nothing from.
    """
    spans = _spans(signature)
    if perturbation.kind == "drop-feature":
        name = perturbation.name
        try:
            registry.feature(name)
        except KeyError as error:
            raise ReplayError(str(error.args[0])) from None
        matches = [span for span in spans if span.feature.name == name]
        if not matches:
            names = [span.feature.name for span in spans]
            raise ReplayError(
                f"model {signature.model!r} does not take feature {name!r} as an input{nearest(name, names)}"
            )
        edits = []
        for span in matches:
            feature = span.feature
            if not isinstance(feature, ViewFeature):
                kind = "derived" if isinstance(feature, DerivedFeature) else "built in"
                raise ReplayError(
                    f"feature {name!r} is {kind}: only stored features have a declared default "
                    f"(zero-table:TABLE zeroes what is read from a table: {sorted(_tables(feature)) or 'none'})"
                )
            default = np.broadcast_to(np.asarray(feature.decl.default, dtype=np.float64), (feature.width,))
            edits.append(ColumnEdit(span.tensor, span.start, span.stop, default))
        return edits
    if perturbation.kind == "zero-table":
        table = perturbation.name
        tables = {view.table for view in registry.views.values()}
        if table not in tables:
            raise ReplayError(f"unknown table {table!r}{nearest(table, tables)}")
        edits = [
            ColumnEdit(span.tensor, span.start, span.stop, np.zeros(span.stop - span.start))
            for span in spans
            if table in _tables(span.feature)
        ]
        if not edits:
            read = sorted(set().union(*(_tables(span.feature) for span in spans)))
            raise ReplayError(f"model {signature.model!r} reads nothing from table {table!r} (it reads {read})")
        return edits
    raise ValueError(f"{perturbation} changes rows, not columns")


def apply_column_edits(inputs: Mapping[str, np.ndarray], edits: Sequence[ColumnEdit]) -> dict[str, np.ndarray]:
    """`inputs` with the edited tensors copied and changed (the others shared, unchanged). A vector input
    (n,) is one column."""
    out = dict(inputs)
    for edit in edits:
        if edit.tensor not in out:
            raise ReplayError(f"the call has no input tensor {edit.tensor!r} (inputs: {sorted(inputs)})")
        tensor = out[edit.tensor]
        if tensor is inputs[edit.tensor]:
            tensor = out[edit.tensor] = np.array(tensor, copy=True)
        values = edit.values.astype(tensor.dtype)
        if tensor.ndim == 1:
            tensor[:] = values[0]
        else:
            tensor[:, edit.start : edit.stop] = values
    return out


def rows_only_from(source: str, rows: np.ndarray, sources: Mapping[str, np.ndarray]) -> npt.NDArray[np.bool_]:
    """Which `rows` (candidate ids) came from `source` and no other source."""
    produced = np.isin(rows, sources[source]) if source in sources else np.zeros(len(rows), np.bool_)
    elsewhere = np.zeros(len(rows), np.bool_)
    for name, ids in sources.items():
        if name != source:
            elsewhere |= np.isin(rows, ids)
    return np.asarray(produced & ~elsewhere)
