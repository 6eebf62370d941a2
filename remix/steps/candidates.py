"""Columnar candidate sets: one numpy array per attribute, so steps work on whole sets at once."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


class ItemType(enum.IntEnum):
    """Item kinds; values match `quasar.v1.ItemType`."""

    POST = 1
    ARTICLE = 2
    JOB = 3


class RowsOf(Mapping[str, np.ndarray]):
    """Feature columns computed for a batch of rows (the sources' shared first-pass frame), seen through
    `rows`: row i of every value is row `rows[i]` of the batch.

    Why not copies: a source keeps a few hundred of its batch's rows, merge and filter keep fewer, and only
    the second pass reads the values. Taking rows composes indices (one small integer gather) and a column
    is gathered from the batch once, when read, instead of at every step on the way.
    """

    __slots__ = ("columns", "names", "rows")

    def __init__(self, columns: Mapping[str, np.ndarray], names: tuple[str, ...], rows: I64) -> None:
        self.columns = columns  # the batch's values by name (it may hold more than `names`)
        self.names = names
        self.rows = rows

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise KeyError(name)
        return np.take(self.columns[name], self.rows, axis=0)

    def __contains__(self, name: object) -> bool:
        return name in self.names  # Mapping's default would gather the column to answer

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def take(self, index: npt.NDArray[np.integer]) -> RowsOf:
        return RowsOf(self.columns, self.names, self.rows[index])

    def same_batch(self, other: object) -> bool:
        """Whether `other` views the same batch with the same names (so their rows can be concatenated)."""
        return isinstance(other, RowsOf) and other.columns is self.columns and other.names == self.names


@dataclass(frozen=True)
class Candidates:
    """A set of candidate items, all arrays of equal length n.

    `source` holds indices into `source_names`; `sources_mask` has bit i set when source i produced the
    item (merge keeps every producer). `scores` is filled by the second pass: shape (n, len(objectives)).
    """

    item_id: I64
    item_type: npt.NDArray[np.int8]
    author_id: I64
    first_pass_score: F32
    source: npt.NDArray[np.int16]
    sources_mask: npt.NDArray[np.uint32]
    source_names: tuple[str, ...]
    scores: F32 | None = None
    objectives: tuple[str, ...] = ()
    utility: F32 | None = None
    features: Mapping[str, np.ndarray] = field(default_factory=dict, compare=False)
    """Feature name -> (n, width) values computed for these rows upstream (a source's first-pass inputs), so
    a later step reading the same declared feature takes it instead of computing it again. Sources give a
    `RowsOf` view of their scoring batch, gathered only when read."""

    def __post_init__(self) -> None:
        n = len(self.item_id)
        for name in ("item_type", "author_id", "first_pass_score", "source", "sources_mask"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Candidates.{name} has {len(getattr(self, name))} rows, item_id has {n}")

    def __len__(self) -> int:
        return len(self.item_id)

    @classmethod
    def from_source(
        cls,
        source_name: str,
        *,
        item_id: I64,
        item_type: npt.NDArray[np.int8],
        author_id: I64,
        first_pass_score: F32,
        features: Mapping[str, np.ndarray] | None = None,
    ) -> Candidates:
        n = len(item_id)
        return cls(
            item_id=np.asarray(item_id, dtype=np.int64),
            item_type=np.asarray(item_type, dtype=np.int8),
            author_id=np.asarray(author_id, dtype=np.int64),
            first_pass_score=np.asarray(first_pass_score, dtype=np.float32),
            source=np.zeros(n, dtype=np.int16),
            sources_mask=np.ones(n, dtype=np.uint32),
            source_names=(source_name,),
            features=features if isinstance(features, RowsOf) else dict(features or {}),
        )

    @classmethod
    def empty(cls, source_names: tuple[str, ...] = ()) -> Candidates:
        return cls(
            item_id=np.empty(0, np.int64),
            item_type=np.empty(0, np.int8),
            author_id=np.empty(0, np.int64),
            first_pass_score=np.empty(0, np.float32),
            source=np.empty(0, np.int16),
            sources_mask=np.empty(0, np.uint32),
            source_names=source_names,
        )

    def take(self, index: npt.NDArray[np.integer]) -> Candidates:
        """Rows at `index`, in that order (any per-row array is taken too)."""
        return replace(
            self,
            item_id=self.item_id[index],
            item_type=self.item_type[index],
            author_id=self.author_id[index],
            first_pass_score=self.first_pass_score[index],
            source=self.source[index],
            sources_mask=self.sources_mask[index],
            scores=None if self.scores is None else self.scores[index],
            utility=None if self.utility is None else self.utility[index],
            features=self._features_at(index),
        )

    def _features_at(self, index: npt.NDArray[np.integer]) -> Mapping[str, np.ndarray]:
        if isinstance(self.features, RowsOf):
            return self.features.take(index)
        return {name: np.take(values, index, axis=0) for name, values in self.features.items()}

    def with_scores(self, scores: F32, objectives: tuple[str, ...], utility: F32) -> Candidates:
        if scores.shape != (len(self), len(objectives)) or utility.shape != (len(self),):
            raise ValueError(
                f"scores {scores.shape} / utility {utility.shape} do not fit {len(self)} candidates "
                f"and {len(objectives)} objectives"
            )
        return replace(self, scores=scores, objectives=objectives, utility=utility)

    def source_list(self, row: int) -> list[str]:
        """Names of every source that produced row `row` (for the response, not the hot path)."""
        mask = int(self.sources_mask[row])
        return [name for bit, name in enumerate(self.source_names) if mask >> bit & 1]
