"""The feature registry: every declared entity, view and derived feature of a deployment, checked as a whole.

Built from one or more `FeaturesDocument`s (`features.loader.load_registry` reads a directory of YAML).
Checks at build time: unique names across files, views naming declared entities, join keys naming
existing id features, derived inputs existing with the shapes their transform needs, no cycles. Every
error names the file, the key path and, for an unknown name, the nearest declared ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from features.declarations import (
    CANDIDATE_COLUMNS,
    KEY_CANDIDATE,
    KEY_NONE,
    KEY_REQUEST,
    DerivedDecl,
    EntityDecl,
    FeatureDecl,
    FeaturesDocument,
    ViewDecl,
)
from features.errors import DeclarationError, nearest


@dataclass(frozen=True)
class ViewFeature:
    """A stored feature: columns [start, start + width) of its view's rows."""

    name: str
    view: ViewDecl
    decl: FeatureDecl
    start: int

    @property
    def width(self) -> int:
        return self.decl.width

    @property
    def is_ids(self) -> bool:
        return self.view.dtype == "int64"


@dataclass(frozen=True)
class BuiltinFeature:
    """`<entity>.id` or `candidate.<column>`: known to the request, not stored."""

    name: str
    entity: str  # the entity whose key it is, or 'candidate'
    is_ids: bool


@dataclass(frozen=True)
class DerivedFeature:
    name: str
    decl: DerivedDecl
    inputs: tuple[Feature, ...]
    width: int
    is_ids: bool = False


Feature = ViewFeature | BuiltinFeature | DerivedFeature


def feature_width(feature: Feature) -> int:
    if isinstance(feature, BuiltinFeature):
        return 1
    return feature.width


@dataclass(frozen=True)
class Located:
    """A declaration and where it came from, for error messages."""

    source: str
    path: str


class FeatureRegistry:
    """Immutable after construction. `feature(name)` resolves any feature name a signature or step may use."""

    def __init__(self, documents: Iterable[tuple[str, FeaturesDocument]]) -> None:
        self.entities: dict[str, EntityDecl] = {}
        self.views: dict[str, ViewDecl] = {}
        self.derived_decls: dict[str, DerivedDecl] = {}
        self._where: dict[str, Located] = {}
        docs = list(documents)
        for source, doc in docs:
            for i, entity in enumerate(doc.entities):
                self._add(self.entities, entity.name, entity, Located(source, f"entities[{i}]"), "entity")
            for i, view in enumerate(doc.views):
                self._add(self.views, view.name, view, Located(source, f"views[{i}]"), "view")
            for i, derived in enumerate(doc.derived):
                self._add(
                    self.derived_decls, derived.name, derived, Located(source, f"derived[{i}]"), "derived feature"
                )
        self._stored: dict[str, ViewFeature] = {}
        for view in self.views.values():
            where = self._where[f"view:{view.name}"]
            if view.entity not in self.entities:
                self._fail(where, "entity", f"unknown entity {view.entity!r}{nearest(view.entity, self.entities)}")
            start = 0
            for feature in view.features:
                name = f"{view.name}.{feature.name}"
                self._stored[name] = ViewFeature(name=name, view=view, decl=feature, start=start)
                start += feature.width
                if view.dtype == "int64" and not all(float(v).is_integer() for v in _values(feature.default)):
                    self._fail(
                        where, f"features.{feature.name}.default", "the default of an int64 feature must be integers"
                    )
        for entity in self.entities.values():
            self._check_key(entity)
        self._derived: dict[str, DerivedFeature] = {}
        for name in self.derived_decls:
            self._resolve_derived(name, ())
        # table -> the store that holds it, as the views reading it declare (validation, ages, ANN sources)
        self.table_stores: Mapping[str, str] = MappingProxyType({v.table: v.store for v in self.views.values()})

    # -- lookups ---------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every feature name a signature can use (stored, derived and entity ids), sorted."""
        builtins = [f"{e}.id" for e, d in self.entities.items() if d.key != KEY_NONE]
        return sorted([*self._stored, *self._derived, *builtins, *(f"candidate.{c}" for c in CANDIDATE_COLUMNS)])

    def feature(self, name: str) -> Feature:
        """The feature called `name`; KeyError naming the nearest declared names."""
        found = self._stored.get(name) or self._derived.get(name)
        if found is not None:
            return found
        head, _, tail = name.partition(".")
        if tail == "id" and head in self.entities and self.entities[head].key != KEY_NONE:
            return BuiltinFeature(name=name, entity=head, is_ids=True)
        if head == "candidate" and tail in CANDIDATE_COLUMNS:
            return BuiltinFeature(name=name, entity="candidate", is_ids=False)
        raise KeyError(f"unknown feature {name!r}{nearest(name, self.names())}")

    def entity_of(self, feature: Feature) -> str:
        """The entity whose rows a stored or built-in feature is read from ('candidate' for candidate.*)."""
        if isinstance(feature, ViewFeature):
            return feature.view.entity
        if isinstance(feature, BuiltinFeature):
            return feature.entity
        raise ValueError(f"{feature.name} is derived: it has no single entity")

    def where(self, kind: str, name: str) -> Located:
        return self._where[f"{kind}:{name}"]

    def candidate_entities(self) -> list[str]:
        return sorted(e for e, d in self.entities.items() if d.key == KEY_CANDIDATE)

    # -- construction ----------------------------------------------------------------------------------

    def _add(self, into: dict, name: str, value: object, where: Located, kind: str) -> None:  # type: ignore[type-arg]
        key = f"{kind.split()[0]}:{name}"
        if name in into:
            first = self._where[key]
            raise DeclarationError(
                where.source,
                [(f"{where.path}.name", f"{kind} {name!r} is already declared in {first.source} ({first.path})")],
            )
        into[name] = value
        self._where[key] = where

    def _fail(self, where: Located, key: str, message: str) -> None:
        raise DeclarationError(where.source, [(f"{where.path}.{key}", message)])

    def _check_key(self, entity: EntityDecl) -> None:
        if entity.key in (KEY_REQUEST, KEY_CANDIDATE, KEY_NONE):
            return
        where = self._where[f"entity:{entity.name}"]
        joined = self._stored.get(entity.key)
        if joined is None:
            self._fail(
                where,
                "key",
                f"{entity.key!r} is neither request, candidate, none nor a declared feature"
                f"{nearest(entity.key, self._stored)}",
            )
            return
        if not joined.is_ids or joined.width != 1:
            self._fail(where, "key", f"{entity.key!r} must be a scalar int64 feature to key {entity.name!r}")
        if joined.view.entity == entity.name:
            self._fail(where, "key", f"{entity.name!r} cannot be keyed by its own feature")

    def _resolve_derived(self, name: str, chain: tuple[str, ...]) -> DerivedFeature:
        if name in self._derived:
            return self._derived[name]
        decl = self.derived_decls[name]
        where = self._where[f"derived:{name}"]
        if name in chain:
            self._fail(where, "inputs", f"cycle: {' -> '.join((*chain, name))}")
        inputs: list[Feature] = []
        for i, input_name in enumerate(decl.inputs):
            if input_name in self.derived_decls:
                inputs.append(self._resolve_derived(input_name, (*chain, name)))
                continue
            try:
                inputs.append(self.feature(input_name))
            except KeyError as error:
                self._fail(where, f"inputs[{i}]", str(error.args[0]))
        try:
            width, is_ids = _derived_shape(decl, inputs, self)
        except ValueError as error:
            self._fail(where, "inputs", str(error))
            raise
        feature = DerivedFeature(name=name, decl=decl, inputs=tuple(inputs), width=width, is_ids=is_ids)
        self._derived[name] = feature
        return feature


def _values(default: float | int | list[float] | list[int]) -> list[float]:
    return [float(v) for v in default] if isinstance(default, list) else [float(default)]


def _derived_shape(decl: DerivedDecl, inputs: list[Feature], registry: FeatureRegistry) -> tuple[int, bool]:
    """(width, is_ids) of a derived feature; ValueError when its inputs do not fit its transform."""
    widths = [feature_width(f) for f in inputs]
    ids = [f.is_ids for f in inputs]
    names = [f.name for f in inputs]
    transform = decl.transform
    if transform in ("log1p", "age"):
        if (ids[0] and transform == "log1p") or widths[0] != 1:
            raise ValueError(f"{transform} needs a scalar number, {names[0]} is not")
        return 1, False
    if transform == "one_hot":
        if widths[0] != 1:
            raise ValueError(f"one_hot needs a scalar, {names[0]} has width {widths[0]}")
        return len(decl.categories), False
    if transform in ("dot", "cosine"):
        if ids[0] or ids[1] or widths[0] != widths[1]:
            raise ValueError(f"{transform} needs two float vectors of one width, got {names} widths {widths}")
        return 1, False
    if transform == "pool":
        table_feature = inputs[1]
        if not ids[0]:
            raise ValueError(f"pool needs an id list first, {names[0]} is not int64")
        if not isinstance(table_feature, ViewFeature) or table_feature.is_ids:
            raise ValueError(f"pool needs a stored float feature second (the vectors of the ids), got {names[1]}")
        return table_feature.width, False
    if transform in ("contains", "overlap"):
        if not (ids[0] and ids[1]):
            raise ValueError(f"{transform} needs two id features, got {names}")
        if transform == "contains" and widths[1] != 1:
            raise ValueError(f"contains needs an id list and a scalar id, {names[1]} has width {widths[1]}")
        return 1, False
    raise ValueError(f"unknown transform {transform!r}")
