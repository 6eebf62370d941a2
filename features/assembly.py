"""Model inputs assembled from declarations: the one code path serving and training share.

An `InputPlan` is compiled once (at workflow build, or by the trainer) for a set of features: which views
of which entities to read, in which order (a join entity after the feature holding its ids), and the
derived features in dependency order. `InputPlan.frame` then reads rows through a `RowReader` (the store
at the request's pinned versions when serving; in-memory tables when training) and computes every
feature, vectorised; `InputPlan.tensor` lays a signature's input out as one contiguous matrix.

Rows: a frame has n rows, one per candidate (serving) or per (member, item) pair (training). A value is
(1, width) when it is the same for every row (the request's member, read once and broadcast) or (n, width).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from features import transforms
from features.declarations import KEY_CANDIDATE, KEY_NONE, KEY_REQUEST, ViewDecl
from features.registry import BuiltinFeature, DerivedFeature, Feature, FeatureRegistry, ViewFeature
from features.signature import InputTensor

I64 = npt.NDArray[np.int64]
Array = npt.NDArray[Any]


class RowReader(Protocol):
    """Reads rows of a view's table for ids (any order): (len(ids), view.width) in the table's lookup
    dtype, with the view's declared defaults in rows the table does not have. A reader with a true
    `sequential` attribute never waits on I/O, so its reads run one after another instead of as tasks, and
    it is given repeated ids as they come (a gather of a repeated row costs less than finding the repeats);
    other readers get each id once."""

    async def read(self, view: ViewDecl, ids: I64) -> Array: ...


def default_row(view: ViewDecl) -> Array:
    """The row an id without one gets: each feature's declared default, broadcast to its width."""
    parts = [np.broadcast_to(np.asarray(f.default, dtype=np.float64), (f.width,)) for f in view.features]
    return np.concatenate(parts).astype(np.int64 if view.dtype == "int64" else np.float32)


async def read_views(reader: RowReader, views: Sequence[ViewDecl], ids: I64) -> list[Array]:
    """`reader.read` of each view for `ids`: concurrently, or one after another for a `sequential` reader
    (in-process reads never wait, so tasks would only add their cost)."""
    if getattr(reader, "sequential", False):
        return [await reader.read(view, ids) for view in views]
    return list(await asyncio.gather(*(reader.read(view, ids) for view in views)))


@dataclass
class Frame:
    """Feature name -> (1 or n, width) array, for n rows."""

    n: int
    values: dict[str, Array] = field(default_factory=dict)

    def get(self, name: str) -> Array:
        return self.values[name]


@dataclass(frozen=True)
class _Work:
    """Views to read and derived features to compute; None: all of them."""

    views: frozenset[str] | None
    derived: frozenset[str] | None


@dataclass(frozen=True)
class _EntityStage:
    entity: str
    key: str  # request | candidate | a feature name
    views: tuple[ViewDecl, ...]


class InputPlan:
    """What to read and compute for `features`; built once, used per request (or per training batch)."""

    def __init__(self, registry: FeatureRegistry, features: Iterable[Feature]) -> None:
        self._registry = registry
        wanted: dict[str, Feature] = {}
        features_list = list(features)
        for feature in features_list:
            self._collect(feature, wanted)
        self.features = tuple(wanted.values())
        views: dict[str, dict[str, ViewDecl]] = {}
        pooled: dict[str, ViewDecl] = {}
        for feature in self.features:
            if isinstance(feature, ViewFeature):
                views.setdefault(feature.view.entity, {})[feature.view.name] = feature.view
            elif isinstance(feature, DerivedFeature) and feature.decl.transform == "pool":
                table_feature = feature.inputs[1]
                assert isinstance(table_feature, ViewFeature)
                pooled[table_feature.view.name] = table_feature.view
        # Entities in read order: request and candidate first, then each join after the entity it goes through.
        stages: list[_EntityStage] = []
        placed: set[str] = set()
        pending = {e: v for e, v in views.items() if registry.entities[e].key != KEY_NONE}
        while pending:
            ready = [
                e
                for e in sorted(pending)
                if registry.entities[e].key in (KEY_REQUEST, KEY_CANDIDATE)
                or (
                    registry.feature(registry.entities[e].key).name in {f for f in wanted}
                    and registry.entity_of(registry.feature(registry.entities[e].key)) in placed
                )
            ]
            if not ready:
                raise ValueError(f"cannot order entity reads for {sorted(pending)}")
            for entity in ready:
                stages.append(_EntityStage(entity, registry.entities[entity].key, tuple(pending.pop(entity).values())))
                placed.add(entity)
        self._stages = tuple(stages)
        # Per view: (feature name, start, stop) of each feature's columns, computed once (not per request).
        self._slices: dict[str, tuple[tuple[str, int, int], ...]] = {}
        for stage in stages:
            for view in stage.views:
                start, cuts = 0, []
                for decl in view.features:
                    cuts.append((f"{view.name}.{decl.name}", start, start + decl.width))
                    start += decl.width
                self._slices[view.name] = tuple(cuts)
        self._id_names = {stage.entity: f"{stage.entity}.id" for stage in stages}
        self.views: tuple[ViewDecl, ...] = (*(v for s in stages for v in s.views), *pooled.values())
        self._derived = tuple(f for f in self.features if isinstance(f, DerivedFeature))
        self._entity_ids = tuple(
            f for f in self.features if isinstance(f, BuiltinFeature) and f.entity in registry.entities
        )
        self._roots = tuple(f.name for f in features_list)
        self._names = frozenset(wanted)
        self._pruned: dict[frozenset[str], _Work] = {frozenset(): _Work(None, None)}

    def _work(self, precomputed: frozenset[str]) -> _Work:
        """What is left to read and compute when `precomputed` features are given (memoised per set)."""
        work = self._pruned.get(precomputed)
        if work is not None:
            return work
        by_name = {f.name: f for f in self.features}
        needed: set[str] = set()
        stack = [name for name in self._roots if name not in precomputed]
        while stack:
            name = stack.pop()
            if name in needed or name in precomputed:
                continue
            needed.add(name)
            stack.extend(f.name for f in self._dependencies(by_name[name]))
        views = frozenset(f.view.name for f in self.features if isinstance(f, ViewFeature) and f.name in needed)
        derived = frozenset(f.name for f in self._derived if f.name in needed)
        work = self._pruned[precomputed] = _Work(views, derived)
        return work

    def _collect(self, feature: Feature, wanted: dict[str, Feature]) -> None:
        """Depth-first: inputs before the features computed from them; join keys before joined views."""
        if feature.name in wanted:
            return
        for dependency in self._dependencies(feature):
            self._collect(dependency, wanted)
        wanted[feature.name] = feature

    def _dependencies(self, feature: Feature) -> list[Feature]:
        """What must be known before `feature`: a derived feature's inputs (a pool's table is read for the
        ids in its list, not for the rows), and the join key of a joined entity's features."""
        if isinstance(feature, DerivedFeature):
            pooled = feature.inputs[1] if feature.decl.transform == "pool" else None
            return [f for f in feature.inputs if f is not pooled]
        entity = self._registry.entities.get(self._registry.entity_of(feature))
        if entity is not None and entity.key not in (KEY_REQUEST, KEY_CANDIDATE, KEY_NONE):
            return [self._registry.feature(entity.key)]
        return []

    def member_views(self) -> tuple[ViewDecl, ...]:
        """Views keyed by the request (read once per request, broadcast over candidates)."""
        return tuple(v for s in self._stages if s.key == KEY_REQUEST for v in s.views)

    async def frame(
        self,
        reader: RowReader,
        *,
        member_ids: I64,
        candidate_ids: I64,
        columns: Mapping[str, Array] | None = None,
        known: Mapping[str, Array] | None = None,
        precomputed: Mapping[str, Array] | None = None,
        now_s: float = 0.0,
    ) -> Frame:
        """Every planned feature for rows = `candidate_ids`. `member_ids` is one id (broadcast) or one per
        row. `columns`: candidate.* values (n,). `known`: view rows already read (view name -> (1, width)
        rows keyed by the request), not read again. `precomputed`: feature values (n, width) an earlier
        step computed for these rows: taken as they are, and nothing only they need is read or computed."""
        n = len(candidate_ids)
        frame = Frame(n=n)
        keys: dict[str, I64] = {KEY_REQUEST: np.asarray(member_ids, np.int64), KEY_CANDIDATE: candidate_ids}
        known = known or {}
        # By key, not `.items()`: a precomputed mapping may be a lazy view (`RowsOf`) whose every value is a
        # gather, and it holds features this plan does not need (a first pass reads more than the second).
        precomputed = precomputed or {}
        given = {name: precomputed[name] for name in precomputed if name in self._names}
        frame.values.update(given)
        work = self._work(frozenset(given))
        sequential = bool(getattr(reader, "sequential", False))
        for stage in self._stages:
            stage_views = [v for v in stage.views if work.views is None or v.name in work.views]
            if not stage_views:
                continue
            ids = keys[stage.key] if stage.key in keys else frame.get(stage.key).reshape(-1)
            frame.values[self._id_names[stage.entity]] = ids.reshape(-1, 1)
            to_read = [v for v in stage_views if v.name not in known]
            # Candidate ids are distinct already.
            unique, inverse = (ids, None) if stage.key == KEY_CANDIDATE else _ids_to_read(ids, sequential=sequential)
            rows = await read_views(reader, to_read, unique)
            for view, block in (
                *zip(to_read, rows, strict=True),
                *((v, known[v.name]) for v in stage_views if v.name in known),
            ):
                if inverse is not None and v_is_full(block, unique):
                    block = np.take(block, inverse, axis=0)
                self._split(view, block, frame)
        for name, column in (columns or {}).items():
            frame.values[f"candidate.{name}"] = np.asarray(column).reshape(-1, 1)
        for entity_id in self._entity_ids:
            if entity_id.name not in frame.values:  # an entity id the plan reads no view of
                key = self._registry.entities[entity_id.entity].key
                ids = keys[key] if key in keys else frame.get(key).reshape(-1)
                frame.values[entity_id.name] = ids.reshape(-1, 1)
        for derived in self._derived:
            if work.derived is None or derived.name in work.derived:
                frame.values[derived.name] = await self._derive(derived, frame, reader, now_s, sequential=sequential)
        return frame

    def _split(self, view: ViewDecl, block: Array, frame: Frame) -> None:
        values = frame.values
        for name, start, stop in self._slices[view.name]:
            values[name] = block[:, start:stop]

    async def _derive(
        self, feature: DerivedFeature, frame: Frame, reader: RowReader, now_s: float, *, sequential: bool
    ) -> Array:
        decl = feature.decl
        args = [frame.get(f.name) for f in feature.inputs if not (decl.transform == "pool" and f is feature.inputs[1])]
        match decl.transform:
            case "log1p":
                return transforms.log1p(args[0])
            case "age":
                return transforms.age(args[0], now_s=now_s, unit_s=decl.unit_s)
            case "one_hot":
                return transforms.one_hot(args[0], tuple(decl.categories))
            case "dot":
                return transforms.dot(args[0], args[1])
            case "cosine":
                return transforms.cosine(args[0], args[1])
            case "contains":
                return transforms.contains(args[0], args[1])
            case "overlap":
                return transforms.overlap(args[0], args[1])
            case "pool":
                lists = args[0]
                table_feature = feature.inputs[1]
                assert isinstance(table_feature, ViewFeature)
                listed = lists >= 0
                flat = lists[listed]
                unique, inverse = _ids_to_read(flat, sequential=sequential)
                positions = np.full(lists.shape, -1, dtype=np.int64)
                positions[listed] = np.arange(len(flat), dtype=np.int64) if inverse is None else inverse
                if len(unique):
                    rows = await reader.read(table_feature.view, unique.astype(np.int64))
                    vectors = rows[:, table_feature.start : table_feature.start + table_feature.width]
                else:
                    vectors = np.zeros((1, table_feature.width), np.float32)
                return transforms.pool(vectors.astype(np.float32, copy=False), positions, decl.mode)
        raise ValueError(f"unknown transform {decl.transform!r}")

    def tensor(self, frame: Frame, tensor: InputTensor) -> Array:
        """One C-contiguous (n, width) matrix of `tensor`'s features, in order, as its dtype."""
        out = np.empty((frame.n, tensor.width), dtype=np.float32 if tensor.dtype == "float32" else np.int64)
        start = 0
        for feature in tensor.features:
            value = frame.get(feature.name)
            width = value.shape[1]
            out[:, start : start + width] = value
            start += width
        return out[:, 0] if tensor.layout == "vector" else out

    def tensors(self, frame: Frame, inputs: Sequence[InputTensor]) -> dict[str, Array]:
        return {t.name: self.tensor(frame, t) for t in inputs}


def _ids_to_read(ids: I64, *, sequential: bool) -> tuple[I64, I64 | None]:
    """The ids to ask a reader for and, when they were deduplicated, each of `ids`' position among them
    (None: they are `ids` as given). A sequential reader is given repeats as they come (see `RowReader`)."""
    if sequential or len(ids) <= 1:
        return ids, None
    unique, inverse = np.unique(ids, return_inverse=True)
    return unique, inverse


def v_is_full(block: Array, unique: I64) -> bool:
    """Whether `block` holds one row per unique id (a known request-level row is already broadcastable)."""
    return block.shape[0] == len(unique) and len(unique) > 1
