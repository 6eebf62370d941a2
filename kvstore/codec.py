"""Embedding vectors <-> bytes values (for key-value stores such as Redis), packed and unpacked in bulk.

One value is a header then the row's raw little-endian floats:

    offset 0  b"QV"          magic
           2  u8 format      1
           3  u8 dtype code  1 = float16, 2 = float32, 3 = int64
           4  u32 dim        little-endian
           8  u8 n           length of the table version
           9  n bytes        table version (ASCII), so a reader detects a value of another version
         9+n  dim floats

All values of one table version have the same length, so `unpack_rows` decodes a whole batch with one
join and one `np.frombuffer`, checking every header at once; Python touches each value only to build
lists. Mixed lengths (mixed dtypes, or corruption) take a per-value path that names the bad value.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kvstore.base import lookup_dtype
from kvstore.errors import CorruptValue

MAGIC = b"QV"
FORMAT = 1
_FIXED = struct.Struct("<2sBBIB")  # magic, format, dtype code, dim, version length
_CODES = {"float16": 1, "float32": 2, "int64": 3}
_DTYPES = {code: np.dtype(name).newbyteorder("<") for name, code in _CODES.items()}


def header(dtype: str, dim: int, version: str) -> bytes:
    """The header every value of (dtype, dim, version) starts with."""
    if dtype not in _CODES:
        raise ValueError(f"dtype must be one of {sorted(_CODES)}, got {dtype!r}")
    encoded = version.encode("ascii")
    if not 0 < len(encoded) <= 255:
        raise ValueError(f"version must be 1..255 ASCII characters, got {version!r}")
    return _FIXED.pack(MAGIC, FORMAT, _CODES[dtype], dim, len(encoded)) + encoded


def pack_rows(matrix: npt.ArrayLike, dtype: str, version: str) -> list[bytes]:
    """One value per row of `matrix` ([n, dim]), stored as `dtype` ('float16' or 'float32').

    Raises ValueError for a matrix that is not 2-D or holds values not finite in `dtype` (float16
    overflows above 65504).
    """
    rows = np.asarray(matrix)
    if rows.ndim != 2:
        raise ValueError(f"matrix must be 2-D [n, dim], got shape {rows.shape}")
    head = header(dtype, rows.shape[1], version)
    if dtype == "int64":
        if rows.dtype.kind not in "iu" and not (np.isfinite(rows).all() and (rows == np.round(rows)).all()):
            raise ValueError("matrix of an int64 table must hold integers")
        payload = np.ascontiguousarray(rows, dtype=_DTYPES[_CODES[dtype]])
    else:
        with np.errstate(over="ignore"):  # reported below as non-finite, with a clearer message
            payload = np.ascontiguousarray(rows, dtype=_DTYPES[_CODES[dtype]])
    if payload.dtype.kind == "f" and not np.isfinite(payload).all():
        raise ValueError(f"matrix holds values that are not finite as {dtype}")
    n, width = rows.shape[0], len(head) + payload.shape[1] * payload.itemsize
    packed = np.empty((n, width), dtype=np.uint8)
    packed[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    packed[:, len(head) :] = payload.view(np.uint8).reshape(n, -1)
    flat = packed.tobytes()
    return [flat[i * width : (i + 1) * width] for i in range(n)]


def unpack_rows(
    values: Sequence[bytes | None], dim: int, expected_version: str, *, table: str = "", dtype: str = "float32"
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Decode values (None = key absent) into [n, dim] of `lookup_dtype(dtype)` (the table's storage dtype
    decides: float32 for float tables, int64 for int64 tables) and a found mask; absent rows are zeros.

    Raises `CorruptValue` naming the first value with a bad header, another dim or another version.
    """
    n = len(values)
    found = np.array([value is not None for value in values], dtype=np.bool_).reshape(n)
    vectors = np.zeros((n, dim), dtype=lookup_dtype(dtype))
    present = [value for value in values if value is not None]
    if not present:
        return vectors, found
    lengths = np.fromiter(map(len, present), dtype=np.int64, count=len(present))
    head_size = _FIXED.size + len(expected_version.encode("ascii"))
    if (lengths == lengths[0]).all():
        stored = _dtype_for_length(int(lengths[0]) - head_size, dim)
        if stored is not None:
            rows = np.frombuffer(b"".join(present), dtype=np.uint8).reshape(len(present), -1)
            expected = np.frombuffer(header(stored, dim, expected_version), dtype=np.uint8)
            if (rows[:, :head_size] == expected).all():
                vectors[found] = rows[:, head_size:].view(_DTYPES[_CODES[stored]])
                return vectors, found
    # Slow path: mixed lengths or a bad header somewhere. Decode one by one to name the culprit.
    positions = np.flatnonzero(found)
    for position, value in zip(positions, present, strict=True):
        vectors[position] = _decode_one(value, dim, expected_version, int(position), table)
    return vectors, found


def _dtype_for_length(payload_bytes: int, dim: int) -> str | None:
    for name in _CODES:
        if payload_bytes == dim * np.dtype(name).itemsize:
            return name
    return None


def _decode_one(value: bytes, dim: int, expected_version: str, position: int, table: str) -> npt.NDArray[Any]:
    def corrupt(problem: str) -> CorruptValue:
        return CorruptValue(f"value {position}: {problem}", table=table)

    if len(value) < _FIXED.size:
        raise corrupt(f"{len(value)} bytes, shorter than a header")
    magic, fmt, code, value_dim, version_length = _FIXED.unpack_from(value)
    if magic != MAGIC or fmt != FORMAT:
        raise corrupt(f"bad magic/format {magic!r}/{fmt}")
    if code not in _DTYPES:
        raise corrupt(f"unknown dtype code {code}")
    if value_dim != dim:
        raise corrupt(f"dim {value_dim}, expected {dim}")
    version = value[_FIXED.size : _FIXED.size + version_length].decode("ascii", errors="replace")
    if version != expected_version:
        raise corrupt(f"version {version!r}, expected {expected_version!r}")
    dtype = _DTYPES[code]
    start = _FIXED.size + version_length
    if len(value) != start + dim * dtype.itemsize:
        raise corrupt(f"{len(value)} bytes, expected {start + dim * dtype.itemsize} for {dtype.name} x {dim}")
    return np.frombuffer(value, dtype=dtype, offset=start).astype(lookup_dtype(dtype.name))
