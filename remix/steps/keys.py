"""Typed slots the built-in ranking steps read and write.

Producers: `rewrite` writes QUERY and EXPERIMENT_BUCKET; `features` writes TABLE_VERSIONS, one
`member_rows_key(view)` per request-keyed view it reads, and MEMBER_DEFAULTED; each source writes
`source_key(its step name)`; `merge` writes MERGED; `filter` writes FILTERED; `rank` (or its fallback
`rank.first_pass_order`) writes RANKED, FEATURES_MISSING and UTILITY_WEIGHTS; `blend` writes FEED, the list the gateway
answers with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from remix.keys import Key
from remix.steps.candidates import Candidates


@dataclass(frozen=True)
class Query:
    """The request as the ranking steps see it, after `rewrite` normalised and defaulted it.

    `context` holds the allow-listed, normalised context entries (surface and locale included);
    `ignored_context` names the keys that were dropped, sorted.
    """

    member_id: int
    count: int
    surface: str
    locale: str
    context: Mapping[str, str]
    ignored_context: tuple[str, ...]
    experiment_bucket: str


QUERY: Key[Query] = Key("query", Query)
EXPERIMENT_BUCKET: Key[str] = Key("experiment_bucket", str)
"""The sticky experiment bucket name, a plain string so a workflow can `switch` on it."""

TABLE_VERSIONS: Key[Mapping[str, str]] = Key("table_versions", Mapping)
"""Store table -> version, resolved once per request by `features` (also in ctx.table_versions): every later
read of the request is at these versions, so one request never mixes two versions of a table."""

MEMBER_DEFAULTED: Key[frozenset[str]] = Key("member_defaulted", frozenset)
"""Views whose row for the member was missing and replaced by the declared defaults."""

MERGED: Key[Candidates] = Key("candidates.merged", Candidates)
"""Deduplicated candidates for the second pass, by first-pass score descending."""

FILTERED: Key[Candidates] = Key("candidates.filtered", Candidates)
"""MERGED without what `filter` dropped, in MERGED order."""

RANKED: Key[Candidates] = Key("candidates.ranked", Candidates)
"""The ranked candidates with `utility` set (and `scores` when the second pass ran), by utility descending."""

FEATURES_MISSING: Key[Mapping[str, int]] = Key("rank.features_missing", Mapping)
"""View -> number of rows the rank step read that were missing (replaced by the declared defaults)."""

UTILITY_WEIGHTS: Key[Mapping[str, float]] = Key("rank.utility_weights", Mapping)
"""Head -> weight of the utility RANKED is ordered by (empty when the fallback ordered by first-pass score):
replay recomputes a captured request's order from other scores with it."""

FEED: Key[Candidates] = Key("feed", Candidates)
"""The final list, at most `Query.count` items by utility descending: what the gateway answers with."""

_SOURCE_PREFIX = "candidates."
_RESERVED = ("merged", "ranked", "filtered")
CANDIDATE_KEYS: dict[str, Key[Candidates]] = {"merged": MERGED, "filtered": FILTERED}
"""The candidate sets a `rank` or `filter` step may read, by the name its parameters use."""


def source_key(name: str) -> Key[Candidates]:
    """The slot a first-pass source step named `name` writes (and `merge` reads): 'candidates.<name>'."""
    if not name or name in _RESERVED:
        raise ValueError(f"invalid source name {name!r}")
    return Key(_SOURCE_PREFIX + name, Candidates)


def member_rows_key(view: str) -> Key[npt.NDArray[Any]]:
    """The slot holding the member's row of a request-keyed view, (1, width), defaults applied."""
    return Key(f"member.{view}", np.ndarray)
