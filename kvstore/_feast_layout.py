"""Feast's Redis online-store layout, as Quasar reads it: keys, hash fields, packed HMGET pipelines and
the decoding of Feast's ValueProto values into one numeric row per entity. Pure: no I/O.

Layout (written by Feast's materialization; Quasar only reads it):

    key    serialized entity key + project name (one hash per entity key, shared by every view on it)
    field  murmur3_32(f"{view}:{feature}") as 4 little-endian bytes -> a serialized feast.types.Value
    field  f"_ts:{view}" -> a serialized google.protobuf.Timestamp: the row's event time

An entity key for one int64 join key is, in version 3: u32 1 (number of keys), u32 2 (STRING), u32
len(join key), the join key, u32 4 (INT64), u32 8, the id as i64; every integer little-endian. Version 2
drops the two counts. So every key of a view has one length and one prefix: a whole pipeline of HMGETs is
packed as one numpy matrix, the id bytes written into a template row.

Values decode column by column (`kvstore._feast_value`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kvstore._feast_value import column, decode_column, event_seconds
from kvstore.base import lookup_dtype
from kvstore.errors import CorruptValue
from kvstore.feast_registry import ENTITY_KEY_VERSIONS, FeastView

_STRING, _INT64 = 2, 4  # feast.types.ValueType numbers


def entity_key_prefix(join_key: str, version: int) -> bytes:
    """The bytes of a serialized int64 entity key that precede the id."""
    if version not in ENTITY_KEY_VERSIONS:
        raise ValueError(f"entity key serialization version {version} is not supported ({ENTITY_KEY_VERSIONS})")
    name = join_key.encode()
    if version >= 3:
        return struct.pack("<III", 1, _STRING, len(name)) + name + struct.pack("<II", _INT64, 8)
    return struct.pack("<I", _STRING) + name + struct.pack("<II", _INT64, 8)


def redis_keys(ids: npt.ArrayLike, join_key: str, project: str, version: int = 3) -> list[bytes]:
    """The Redis keys of int64 `ids` (offline tools and tests; the request path packs commands)."""
    prefix, suffix = entity_key_prefix(join_key, version), project.encode()
    return [prefix + struct.pack("<q", int(i)) + suffix for i in np.asarray(ids, dtype=np.int64)]


def field_name(view: str, feature: str) -> bytes:
    """The hash field holding `feature` of `view`: murmur3_32 (seed 0) of "view:feature", 4 bytes LE."""
    import mmh3  # the feast extra's dependency: imported where used so kvstore imports without it

    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def timestamp_field(view: str) -> bytes:
    return f"_ts:{view}".encode()


class ViewLayout:
    """Reads one Feast view's rows: `pack` the HMGETs for ids, `decode` their replies. Pure: no I/O."""

    def __init__(self, project: str, view: FeastView, entity_key_version: int = 3) -> None:
        self.view = view
        self.fields = [field_name(view.online_name, f.name) for f in view.features]
        self.fields.append(timestamp_field(view.online_name))
        self.dtype = lookup_dtype(view.dtype)
        prefix = entity_key_prefix(view.join_key, entity_key_version)
        suffix = project.encode()
        key_length = len(prefix) + 8 + len(suffix)
        head = b"*%d\r\n$5\r\nHMGET\r\n$%d\r\n" % (len(self.fields) + 2, key_length) + prefix
        tail = suffix + b"\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in self.fields)
        self._id_at = len(head)
        self._template = np.frombuffer(head + bytes(8) + tail, dtype=np.uint8)
        self._columns = []
        start = 0
        for feature in view.features:
            self._columns.append(column(feature, start))
            start += feature.width

    def pack(self, ids: npt.NDArray[np.int64]) -> bytes:
        """One HMGET per id, in order, as one RESP payload (`len(ids)` replies follow)."""
        n = len(ids)
        rows = np.empty((n, len(self._template)), dtype=np.uint8)
        rows[:] = self._template
        rows[:, self._id_at : self._id_at + 8] = np.asarray(ids, dtype="<i8").view(np.uint8).reshape(n, 8)
        return rows.tobytes()

    def decode(
        self, replies: Sequence[Any], ids: npt.NDArray[np.int64], *, now_s: float | None
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """(rows (n, dim) in `self.dtype`, found (n,)) from the HMGET replies for `ids`.

        A row is found when its hash holds every feature of the view with a value set; when `now_s` is
        given and the view has a ttl, also when its event time is within the ttl (to the second: ages
        round up). Rows not found are zeros. CorruptValue for a value of another type or list length
        (the repository's definition and the online store disagree).
        """
        n = len(ids)
        for reply in replies:
            if type(reply) is not list:  # an error reply (WRONGTYPE: the key is not a Feast hash)
                raise CorruptValue(f"redis replied {reply!s} to HMGET of a Feast entity key")
        columns = list(zip(*replies, strict=True)) if n else [() for _ in self.fields]
        out = np.zeros((n, self.view.dim), dtype=self.dtype)
        found = np.ones(n, dtype=np.bool_)
        for spec, values in zip(self._columns, columns, strict=False):
            decode_column(spec, values, out, found, ids)
        if now_s is not None and self.view.ttl_s is not None:
            found &= event_seconds(columns[-1]) >= now_s - self.view.ttl_s
        out[~found] = 0
        return out, found
