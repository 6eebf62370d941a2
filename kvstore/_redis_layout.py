"""Where embedding tables live in Redis, and multi-key commands packed with numpy.

Keys (`prefix` defaults to "qe"):

    <prefix>:{<table>:<version>:<bucket>}:<id>   one row: a `kvstore.codec` value
    <prefix>:current                            hash: table -> current version (one HSET switches a table)
    <prefix>:versions:{<table>}                 hash: version -> JSON `VersionMeta`
    <prefix>:tables                             set: every table that ever had a version

`<id>` is the id's 64-bit two's complement as 16 lowercase hex digits and `<bucket>` is `id mod buckets`
(0 <= bucket < buckets) zero-padded to the width of `buckets - 1`, so every key of a table version has the
same length. The hash tag `{table:version:bucket}` puts a bucket in one cluster slot: a bulk read is one
MGET per bucket on a cluster (keys of different slots cannot share a command there, even on one node),
and one MGET for all ids on a single server. Fixed-width keys let a whole MGET be packed as one numpy
matrix instead of formatting each key in Python.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_PREFIX = "qe"
DEFAULT_BUCKETS = 16
STATE_WRITING, STATE_COMPLETE, STATE_DELETING = "writing", "complete", "deleting"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # as kvstore.embedded: no glob or brace characters
# Byte -> its two hex digits, as a little-endian uint16 whose memory reads "<high digit><low digit>".
_HEX_PAIRS = np.array([ord(f"{b:02x}"[0]) | ord(f"{b:02x}"[1]) << 8 for b in range(256)], dtype="<u2")
_CRLF = np.frombuffer(b"\r\n", dtype=np.uint8)


@dataclass(frozen=True)
class VersionMeta:
    """What `<prefix>:versions:{table}` holds for one version. Only `complete` versions are served."""

    dim: int
    dtype: str
    count: int
    buckets: int
    created_at: str
    state: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> VersionMeta:
        raw: dict[str, Any] = json.loads(text)
        return cls(
            dim=int(raw["dim"]),
            dtype=str(raw["dtype"]),
            count=int(raw["count"]),
            buckets=int(raw["buckets"]),
            created_at=str(raw["created_at"]),
            state=str(raw["state"]),
        )


def check_name(kind: str, name: str) -> str:
    """`name` if it is a valid table or version name (it becomes part of keys and SCAN patterns)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{kind} name {name!r} must match {_NAME.pattern}")
    return name


def current_key(prefix: str) -> bytes:
    return f"{prefix}:current".encode()


def versions_key(prefix: str, table: str) -> bytes:
    return f"{prefix}:versions:{{{table}}}".encode()


def tables_key(prefix: str) -> bytes:
    return f"{prefix}:tables".encode()


class Layout:
    """The data keys of one table version. Pure: no I/O."""

    def __init__(self, prefix: str, table: str, version: str, buckets: int) -> None:
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets}")
        self.buckets = buckets
        width = len(str(buckets - 1))
        self._base = f"{prefix}:{{{table}:{version}:"
        self.tags = [f"{{{table}:{version}:{b:0{width}d}}}".encode() for b in range(buckets)]
        prefixes = [f"{self._base}{b:0{width}d}}}:".encode() for b in range(buckets)]
        self.key_length = len(prefixes[0]) + 16
        row_head = f"${self.key_length}\r\n".encode()
        # One row of a packed command: "$<len>\r\n" + key prefix of the bucket + 16 hex digits + "\r\n".
        self._row_prefixes = np.frombuffer(b"".join(row_head + p for p in prefixes), dtype=np.uint8).reshape(
            buckets, -1
        )
        self._row_width = self._row_prefixes.shape[1] + 16 + 2

    def scan_pattern(self) -> bytes:
        """A SCAN MATCH pattern for every data key of this version (names hold no glob characters)."""
        return f"{self._base}*".encode()

    def bucket_of(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.mod(ids, self.buckets)

    def key(self, key_id: int) -> bytes:
        return self.keys(np.array([key_id], dtype=np.int64))[0]

    def keys(self, ids: npt.NDArray[np.int64]) -> list[bytes]:
        """The keys of `ids`, in order (offline tools; the request path packs commands instead)."""
        rows = self._rows(np.asarray(ids, dtype=np.int64))
        start = self._row_prefixes.shape[1] - (self.key_length - 16)
        flat = rows[:, start:-2].tobytes()
        size = self.key_length
        return [flat[i * size : (i + 1) * size] for i in range(len(rows))]

    def pack(self, command: bytes, ids: npt.NDArray[np.int64]) -> bytes:
        """`command key(id0) key(id1) …` in RESP, built as one matrix (MGET, EXISTS, UNLINK…)."""
        head = b"*%d\r\n$%d\r\n%s\r\n" % (len(ids) + 1, len(command), command)
        return head + self._rows(ids).tobytes()

    def _rows(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        n = len(ids)
        out = np.empty((n, self._row_width), dtype=np.uint8)
        start = self._row_prefixes.shape[1]
        out[:, :start] = np.take(self._row_prefixes, np.mod(ids, self.buckets), axis=0)
        octets = np.asarray(ids, dtype=">i8").view(np.uint8).reshape(n, 8)  # two's complement, big-endian
        out[:, start : start + 16] = np.take(_HEX_PAIRS, octets).view(np.uint8)
        out[:, start + 16 :] = _CRLF
        return out
