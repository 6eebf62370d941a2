"""What a product declares about its features, as typed values (parsed from YAML by `features.loader`).

```yaml
entities:
  - {name: member, key: request}                  # keyed by the request's member id
  - {name: item, key: candidate}                  # keyed by each candidate's id
  - {name: author, key: item_meta.author_id}      # keyed through another entity's feature (a join)
  - {name: hashtag, key: none}                    # reached only by pooling an id list through its table
views:
  - name: item_meta
    entity: item
    table: item_meta             # the store table: one row per entity id, the features concatenated
    dtype: int64                 # the table's storage dtype: float16 | float32 | int64
    max_age_s: 86400             # optional: a table version older than this is stale
    owner: feed-ml
    tags: [metadata]
    description: Type, author and creation time of an item.
    features:
      - {name: type, description: 1 post, 2 article, 3 job}
      - {name: author_id}
      - {name: created_at_s, description: epoch seconds}
      - {name: hashtags, shape: [5], default: -1, description: id list padded with -1}
derived:
  - {name: item_log_popularity, transform: log1p, inputs: [item_stats.popularity]}
```

A view feature is named `<view>.<feature>`; a derived feature by its own name (no dot). Built-ins:
`<entity>.id` (an entity's key) and `candidate.<column>` (first_pass_score). Id lists are int64 features
with a shape, padded with negative ids.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DTYPES = ("float16", "float32", "int64")
KEY_REQUEST, KEY_CANDIDATE, KEY_NONE = "request", "candidate", "none"
CANDIDATE_COLUMNS = ("first_pass_score",)
"""Built-in per-candidate features (`candidate.<column>`): values a step computed, not stored."""


class _Decl(BaseModel):
    # Strict: YAML typos (`shape: "8"`, `default: "0"`) must not be coerced into something else.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_name(name: str) -> str:
    if not NAME.match(name):
        raise ValueError(f"{name!r} is not a lowercase identifier ([a-z][a-z0-9_]*)")
    return name


_Name = Annotated[str, Field(min_length=1)]
_Ident = Annotated[str, AfterValidator(_check_name)]


class EntityDecl(_Decl):
    """What rows are keyed by. `key`: `request` (the member id), `candidate` (each candidate's id), a
    feature `<view>.<feature>` of another entity holding this entity's id (a join), or `none` (reached
    only through a `pool` transform)."""

    name: _Ident
    key: _Name
    description: str = ""


class FeatureDecl(_Decl):
    """One feature of a view: `shape` [] for a scalar, [k] for a vector or an id list."""

    name: _Ident
    shape: list[int] = Field(default_factory=list)
    default: float | int | list[float] | list[int] = 0
    description: str = ""
    tags: list[str] = Field(default_factory=list)

    @field_validator("shape")
    @classmethod
    def _shape(cls, shape: list[int]) -> list[int]:
        if len(shape) > 1 or any(d < 1 for d in shape):
            raise ValueError(f"shape must be [] or [k] with k >= 1, got {list(shape)}")
        return shape

    @property
    def width(self) -> int:
        return self.shape[0] if self.shape else 1

    @model_validator(mode="after")
    def _default_fits(self) -> FeatureDecl:
        if isinstance(self.default, list) and len(self.default) != self.width:
            raise ValueError(f"default has {len(self.default)} values, the feature {self.width}")
        return self


class ViewDecl(_Decl):
    """A feature view: features of one entity stored as one row per id in one store table."""

    name: _Ident
    entity: _Name
    table: _Name
    store: str = Field("default", min_length=1, description="which configured store holds the table")
    dtype: str = "float32"
    max_age_s: float | None = Field(None, gt=0)
    owner: str = ""
    tags: list[str] = Field(default_factory=list)
    description: str = ""
    features: Annotated[list[FeatureDecl], Field(min_length=1)]

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, dtype: str) -> str:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        return dtype

    @model_validator(mode="after")
    def _unique_features(self) -> ViewDecl:
        names = [f.name for f in self.features]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"duplicate feature names {duplicated}")
        return self

    @functools.cached_property
    def width(self) -> int:
        """Values in one row of the table: the features' widths summed (once: every read checks it)."""
        return sum(f.width for f in self.features)


Transform = Literal["log1p", "age", "one_hot", "dot", "cosine", "pool", "contains", "overlap"]
ARITY: dict[str, int] = {
    "log1p": 1,
    "age": 1,
    "one_hot": 1,
    "dot": 2,
    "cosine": 2,
    "pool": 2,
    "contains": 2,
    "overlap": 2,
}
"""How many input features each transform takes (see `features.transforms` for what each computes)."""


class DerivedDecl(_Decl):
    """A feature computed from others by one transform of the closed set (`features.transforms`).

    `unit` (age): seconds per unit of the result (3600: hours, 86400: days). `categories` (one_hot): the
    values, one output column each. `mode` (pool): mean or sum.
    """

    name: _Ident
    transform: Transform
    inputs: list[_Name]
    unit_s: float = Field(86400.0, gt=0)
    categories: list[int] = Field(default_factory=list)
    mode: Literal["mean", "sum"] = "mean"
    owner: str = ""
    tags: list[str] = Field(default_factory=list)
    description: str = ""

    @model_validator(mode="after")
    def _arity(self) -> DerivedDecl:
        expected = ARITY[self.transform]
        if len(self.inputs) != expected:
            raise ValueError(f"{self.transform} takes {expected} input(s), got {len(self.inputs)}")
        if self.transform == "one_hot" and not self.categories:
            raise ValueError("one_hot needs `categories`")
        return self


class FeaturesDocument(_Decl):
    """One features YAML file. Files of a product are merged; names are unique across all of them."""

    entities: list[EntityDecl] = Field(default_factory=list)
    views: list[ViewDecl] = Field(default_factory=list)
    derived: list[DerivedDecl] = Field(default_factory=list)
