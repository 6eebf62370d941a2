"""The candidate corpus first-pass sources retrieve from: items, authors, the member graph.

In production each source is backed by its own retrieval service; the embedded default reads these
arrays from a world directory, memory-mapped. Ids are dense: members are 1..n_members and items are
1..n_items; row 0 of every per-id array is unused padding so an id indexes its row directly.
CSR pairs (`*_indptr`, `*_indices`) hold variable-length lists: row r is indices[indptr[r]:indptr[r+1]].
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import numpy.typing as npt

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Corpus:
    n_members: int
    n_items: int
    n_hashtags: int
    # per item (length n_items + 1)
    item_author: npt.NDArray[np.int64]
    item_type: npt.NDArray[np.int8]  # remix.candidates.ItemType values
    item_age_hours: npt.NDArray[np.float32]  # age at the world's "now"
    item_popularity: npt.NDArray[np.float32]  # engagement count, >= 0
    item_hashtags_indptr: npt.NDArray[np.int64]
    item_hashtags_indices: npt.NDArray[np.int32]
    # Retrieval embeddings (n + 1, topic_dim), L2-normalised: first-pass similarity and ANN-style lookup.
    # Distinct from the second-pass embedding tables, which live in the kvstore.
    item_topics: npt.NDArray[np.float32]
    member_topics: npt.NDArray[np.float32]
    # per member (length n_members + 1 for indptr / activity)
    member_activity: npt.NDArray[np.float32]  # 0..1, how engaged the member is
    connections_indptr: npt.NDArray[np.int64]
    connections_indices: npt.NDArray[np.int64]  # member ids, sorted within a row
    member_hashtags_indptr: npt.NDArray[np.int64]  # hashtags the member follows
    member_hashtags_indices: npt.NDArray[np.int32]
    author_items_indptr: npt.NDArray[np.int64]  # items each member authored, newest first
    author_items_indices: npt.NDArray[np.int64]

    def connections(self, member_id: int) -> npt.NDArray[np.int64]:
        return self.connections_indices[self.connections_indptr[member_id] : self.connections_indptr[member_id + 1]]

    def followed_hashtags(self, member_id: int) -> npt.NDArray[np.int32]:
        lo, hi = self.member_hashtags_indptr[member_id], self.member_hashtags_indptr[member_id + 1]
        return self.member_hashtags_indices[lo:hi]

    def has_member(self, member_id: int) -> bool:
        return 1 <= member_id <= self.n_members

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        sizes = {"n_members": self.n_members, "n_items": self.n_items, "n_hashtags": self.n_hashtags}
        for f in fields(self):
            if f.name not in sizes:
                np.save(directory / f"{f.name}.npy", getattr(self, f.name))
        (directory / "corpus.json").write_text(json.dumps({"format": FORMAT_VERSION, **sizes}, indent=2))

    @classmethod
    def load(cls, directory: Path, *, mmap: bool = True) -> Corpus:
        meta_path = directory / "corpus.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path} not found: build the world first (`quasar world build`)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: corpus format {meta.get('format')}, expected {FORMAT_VERSION}")
        arrays = {
            f.name: np.load(directory / f"{f.name}.npy", mmap_mode="r" if mmap else None)
            for f in fields(cls)
            if f.name not in ("n_members", "n_items", "n_hashtags")
        }
        return cls(n_members=meta["n_members"], n_items=meta["n_items"], n_hashtags=meta["n_hashtags"], **arrays)
