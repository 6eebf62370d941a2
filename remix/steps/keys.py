"""Typed slots the built-in ranking steps read and write.

Producers: `rewrite` writes QUERY and EXPERIMENT_BUCKET; `features` writes TABLE_VERSIONS,
MEMBER_EMBEDDING, MEMBER_FEATURES and MEMBER_DEFAULTED; each source writes `source_key(its step name)`;
`merge` writes MERGED; `rank` (or its fallback `rank.first_pass_order`) writes RANKED and
EMBEDDINGS_MISSING; `blend` writes FEED, the list the gateway answers with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from remix.candidates import Candidates
from remix.keys import Key


@dataclass(frozen=True)
class Query:
    """The request as the ranking steps see it, after `rewrite` normalised and defaulted it.

    `member_id` is the caller's id; `corpus_member` is the corpus row retrieval reads for it: the id
    itself for a member the corpus knows, else row 0 (the all-empty padding row), so members beyond the
    corpus are served as cold starts. `context` holds the allow-listed, normalised context entries
    (surface and locale included); `ignored_context` names the keys that were dropped, sorted.
    """

    member_id: int
    corpus_member: int
    count: int
    surface: str
    locale: str
    context: Mapping[str, str]
    ignored_context: tuple[str, ...]
    experiment_bucket: str

    @property
    def cold_start(self) -> bool:
        return self.corpus_member == 0


QUERY: Key[Query] = Key("query", Query)
EXPERIMENT_BUCKET: Key[str] = Key("experiment_bucket", str)
"""The sticky experiment bucket name, a plain string so a workflow can `switch` on it."""

TABLE_VERSIONS: Key[Mapping[str, str]] = Key("table_versions", Mapping)
"""Embedding/feature table -> version, resolved once per request by `features` (also in ctx.table_versions)."""

MEMBER_EMBEDDING: Key[npt.NDArray[np.float32]] = Key("member_embedding", np.ndarray)
"""float32 (dim,): the member's row of the 'member' table; zeros when the member has none."""

MEMBER_FEATURES: Key[npt.NDArray[np.float32]] = Key("member_features", np.ndarray)
"""float32 (len(MEMBER_FEATURES),): the member's 'member_features' row; zeros when the member has none."""

MEMBER_DEFAULTED: Key[frozenset[str]] = Key("member_defaulted", frozenset)
"""Tables whose member row was missing and replaced by zeros (empty for a known member)."""

MERGED: Key[Candidates] = Key("candidates.merged", Candidates)
"""Deduplicated candidates for the second pass, by first-pass score descending."""

RANKED: Key[Candidates] = Key("candidates.ranked", Candidates)
"""MERGED with `utility` set (and `scores` when the second pass ran), by utility descending."""

EMBEDDINGS_MISSING: Key[Mapping[str, int]] = Key("rank.embeddings_missing", Mapping)
"""Table -> number of ids the rank step asked for that had no row (defaulted to zeros)."""

FEED: Key[Candidates] = Key("feed", Candidates)
"""The final list, at most `Query.count` items by utility descending: what the gateway answers with."""

_SOURCE_PREFIX = "candidates."


def source_key(name: str) -> Key[Candidates]:
    """The slot a first-pass source step named `name` writes (and `merge` reads): 'candidates.<name>'."""
    if not name or name in ("merged", "ranked"):
        raise ValueError(f"invalid source name {name!r}")
    return Key(_SOURCE_PREFIX + name, Candidates)


ALL_KEYS: tuple[Key[Any], ...] = (
    QUERY,
    EXPERIMENT_BUCKET,
    TABLE_VERSIONS,
    MEMBER_EMBEDDING,
    MEMBER_FEATURES,
    MEMBER_DEFAULTED,
    MERGED,
    RANKED,
    EMBEDDINGS_MISSING,
    FEED,
)
