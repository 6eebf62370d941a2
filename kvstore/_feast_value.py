"""Decoding Feast's serialized `feast.types.Value` messages (and the `_ts` Timestamps) column by column,
into numeric rows. Pure: no I/O, and no Feast import: the request path never loads Feast.

A Value is a protobuf oneof. The fields Quasar reads (numbers from Feast's Value.proto):

    scalar  int32_val 3, int64_val 4 (varint), double_val 5 (fixed64), float_val 6 (fixed32), bool_val 7
    list    int32_list_val 13, int64_list_val 14, double_list_val 15, float_list_val 16, bool_list_val 17:
            a message whose field 1 is the repeated value, packed
    null    null_val 19, or no field at all (Feast's serialization of a missing value: empty bytes)

Fast paths, vectorised over a column: values with a fixed wire length (float, double, bool and lists of
them) with one `np.frombuffer` after checking each value's header bytes; varint values (int32, int64 and
their lists) as one varint stream. Values in any other valid encoding (unpacked lists, an explicit null,
fields in another order) take an exact one-by-one wire parser, which also names a value of another type.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kvstore.errors import CorruptValue
from kvstore.feast_registry import FeastFeature

# element kind -> (scalar field number, list field number, numpy wire dtype; None for varints)
_WIRE: dict[str, tuple[int, int, str | None]] = {
    "float32": (6, 16, "<f4"),
    "float64": (5, 15, "<f8"),
    "bool": (7, 17, "u1"),
    "int32": (3, 13, None),
    "int64": (4, 14, None),
}
_NULL = 19
_FIELD_NAMES = {
    1: "bytes_val",
    2: "string_val",
    3: "int32_val",
    4: "int64_val",
    5: "double_val",
    6: "float_val",
    7: "bool_val",
    8: "unix_timestamp_val",
    11: "bytes_list_val",
    12: "string_list_val",
    13: "int32_list_val",
    14: "int64_list_val",
    15: "double_list_val",
    16: "float_list_val",
    17: "bool_list_val",
    18: "unix_timestamp_list_val",
    19: "null_val",
}
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5  # protobuf wire types


@dataclass(frozen=True)
class Column:
    """How one feature's values decode; `header` + `length` describe the fixed-width encoding (empty
    and 0 for varints)."""

    feature: FeastFeature
    start: int  # first column of the feature in the row
    field: int  # the Value field number expected
    header: bytes
    wire: str | None
    length: int


def column(feature: FeastFeature, start: int) -> Column:
    scalar_field, list_field, wire = _WIRE[feature.kind]
    number = scalar_field if feature.length is None else list_field
    if wire is None:
        return Column(feature, start, number, b"", None, 0)
    payload = feature.width * np.dtype(wire).itemsize
    if feature.length is None:
        header = _varint(number << 3 | {"<f8": _FIXED64, "<f4": _FIXED32}.get(wire, _VARINT))
    else:  # Value{<kind>_list_val: List{val (1): packed elements}}
        inner = b"\x0a" + _varint(payload)
        header = _varint(number << 3 | _LENGTH) + _varint(len(inner) + payload) + inner
    return Column(feature, start, number, header, wire, len(header) + payload)


def decode_column(
    spec: Column,
    values: Sequence[bytes | None],
    out: npt.NDArray[Any],
    found: npt.NDArray[np.bool_],
    ids: npt.NDArray[np.int64],
) -> None:
    """Write the feature `spec` of each row into `out`; clear `found` where the value is absent or null.
    CorruptValue (naming the feature and entity id) for a value of another type or list length."""
    n = len(values)
    present = np.fromiter(map(bool, values), dtype=np.bool_, count=n)  # None (no field) and b"" (null)
    found &= present
    index = np.flatnonzero(present)
    if not index.size:
        return
    chosen = [value for value in values if value]  # in the order of `index`
    target = out[:, spec.start : spec.start + spec.feature.width]
    ok, decoded = (_fixed_width if spec.wire is not None else _varints)(spec, chosen)
    target[index[ok]] = decoded
    for i in index[~ok].tolist():
        value = values[i]
        assert value is not None
        row = _exact(value, spec, int(ids[i]))
        if row is None:
            found[i] = False
        else:
            target[i] = row


def event_seconds(values: Sequence[bytes | None]) -> npt.NDArray[np.int64]:
    """Seconds (field 1) of each serialized google.protobuf.Timestamp; -2**63 where there is none."""
    n = len(values)
    seconds = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    present = np.flatnonzero(np.fromiter(map(bool, values), dtype=np.bool_, count=n))
    chosen = [value for value in values if value]
    # Seconds since 1970 between 2**28 (1978) and 2**35 are a 5-byte varint after the 0x08 tag.
    heads = b"".join([value[:6] for value in chosen])
    rest = present
    if chosen and len(heads) == 6 * len(chosen):
        rows = np.frombuffer(heads, dtype=np.uint8).reshape(-1, 6).astype(np.int64)
        shape_ok = (rows[:, 0] == 0x08) & (rows[:, 1:5] >= 0x80).all(axis=1) & (rows[:, 5] < 0x80)
        weights = np.array([0, 0, 7, 14, 21, 28], dtype=np.int64)
        decoded = ((rows & 0x7F) << weights)[:, 1:].sum(axis=1)
        seconds[present[shape_ok]] = decoded[shape_ok]
        rest = present[~shape_ok]
    for i in rest.tolist():
        fields = _fields(values[i] or b"")
        number = next((v for f, wt, v in reversed(fields) if f == 1 and wt == _VARINT), 0)
        seconds[i] = _signed(int(number))
    return seconds


# -- vectorised paths --------------------------------------------------------------------------------------


def _fixed_width(spec: Column, chosen: list[bytes]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[Any]]:
    """(decoded mask over `chosen`, their rows): values of the expected length whose header matches."""
    lengths = np.fromiter(map(len, chosen), dtype=np.int64, count=len(chosen))
    fixed = lengths == spec.length
    if not fixed.all():
        chosen = [chosen[i] for i in np.flatnonzero(fixed).tolist()]
    rows = np.frombuffer(b"".join(chosen), dtype=np.uint8).reshape(-1, spec.length)
    header = np.frombuffer(spec.header, dtype=np.uint8)
    good = (rows[:, : len(header)] == header).all(axis=1)
    ok = np.zeros(len(lengths), dtype=np.bool_)
    ok[np.flatnonzero(fixed)[good]] = True
    assert spec.wire is not None
    return ok, rows[good, len(header) :].view(spec.wire).reshape(-1, spec.feature.width)


def _varints(spec: Column, chosen: list[bytes]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[Any]]:
    """(decoded mask over `chosen`, their rows) for int32/int64 values, all at once.

    Every byte of such a Value is part of a varint: a scalar is [tag, value]; a packed list is [tag,
    length, 0x0a, length, value…] (the tags are one-byte varints too). So the joined column decodes as
    one varint stream, and a value is in this shape when it holds exactly the expected number of
    varints, its tags match and its lengths count its bytes.
    """
    feature = spec.feature
    m = len(chosen)
    ok = np.zeros(m, dtype=np.bool_)
    empty = np.zeros((0, feature.width), dtype=np.int64)
    lengths = np.fromiter(map(len, chosen), dtype=np.int64, count=m)
    stream = np.frombuffer(b"".join(chosen), dtype=np.uint8)
    row_end = np.cumsum(lengths)
    row_start = row_end - lengths
    is_end = stream < 0x80
    if not is_end[row_end - 1].all():  # a value ends inside a varint: leave them all to the exact path
        return ok, empty
    end_at = np.flatnonzero(is_end)
    starts = np.concatenate([np.zeros(1, dtype=np.int64), end_at[:-1] + 1])
    if int((end_at - starts).max()) >= 10:  # a varint over 10 bytes is malformed
        return ok, empty
    varint_of: npt.NDArray[np.int64] = np.cumsum(is_end, dtype=np.int64) - is_end  # each byte's varint
    shifts = (7 * (np.arange(len(stream)) - starts[varint_of])).astype(np.uint64)
    numbers = np.add.reduceat((stream & 0x7F).astype(np.uint64) << shifts, starts)
    first: npt.NDArray[np.int64] = varint_of[row_start]
    count = varint_of[row_end - 1] - first + 1
    if feature.length is None:
        expected, offset, tag = 2, 1, spec.field << 3 | _VARINT
    else:
        expected, offset, tag = 4 + feature.length, 4, spec.field << 3 | _LENGTH
    candidates = np.flatnonzero(count == expected)
    k: npt.NDArray[np.int64] = first[candidates]
    good = numbers[k] == tag
    if feature.length is not None:
        end = row_end[candidates].astype(np.uint64)
        good &= numbers[k + 2] == 0x0A
        good &= numbers[k + 1] == end - starts[k + 2].astype(np.uint64)
        good &= numbers[k + 3] == end - starts[k + 4].astype(np.uint64)
    ok[candidates[good]] = True
    picks = k[good][:, None] + offset + np.arange(feature.width)
    return ok, numbers[picks].view(np.int64)  # two's complement: negative int32 and int64 come out signed


# -- the exact path ------------------------------------------------------------------------------------------


def _exact(data: bytes, spec: Column, entity_id: int) -> list[Any] | None:
    """One Value, parsed field by field: its elements, None for a null, CorruptValue otherwise."""
    feature = spec.feature
    where = f"feature {feature.name!r} of entity {entity_id}"
    try:
        fields = _fields(data)
    except ValueError as error:
        raise CorruptValue(f"{where}: malformed Value ({error})") from None
    if not fields or fields[-1][0] == _NULL:  # a oneof: the last field on the wire wins
        return None
    number, wire_type, payload = fields[-1]
    if number != spec.field:
        expected, held = _FIELD_NAMES[spec.field], _FIELD_NAMES.get(number, f"field {number}")
        raise CorruptValue(f"{where}: expected {expected}, the online store holds {held}")
    try:
        if feature.length is None:
            return [_element(feature.kind, wire_type, payload)]
        if wire_type != _LENGTH:
            raise ValueError(f"wire type {wire_type} for a list")
        assert isinstance(payload, bytes)
        elements: list[Any] = []
        for inner, inner_type, inner_payload in _fields(payload):
            if inner == 1:
                elements += _elements(feature.kind, inner_type, inner_payload)
    except (ValueError, struct.error) as error:
        raise CorruptValue(f"{where}: malformed {_FIELD_NAMES[spec.field]} ({error})") from None
    if len(elements) != feature.length:
        raise CorruptValue(f"{where}: expected {feature.length} values, the online store holds {len(elements)}")
    return elements


def _elements(kind: str, wire_type: int, payload: int | bytes) -> list[Any]:
    """The values of one occurrence of a repeated field: packed (a length-delimited run) or one value."""
    if wire_type != _LENGTH:
        return [_element(kind, wire_type, payload)]
    assert isinstance(payload, bytes)
    wire = _WIRE[kind][2]
    if wire is not None and wire != "u1":
        elements: list[Any] = np.frombuffer(payload, dtype=wire).tolist()  # ValueError: a ragged run
        return elements
    out, at = [], 0
    while at < len(payload):
        number, at = _read_varint(payload, at)
        out.append(_signed(number) if kind != "bool" else int(number != 0))
    return out


def _element(kind: str, wire_type: int, payload: int | bytes) -> Any:
    expected = {"float32": _FIXED32, "float64": _FIXED64}.get(kind, _VARINT)
    if wire_type != expected:
        raise ValueError(f"wire type {wire_type} for a {kind}")
    if kind in ("float32", "float64"):
        assert isinstance(payload, bytes)
        return struct.unpack("<f" if kind == "float32" else "<d", payload)[0]
    assert isinstance(payload, int)
    return int(payload != 0) if kind == "bool" else _signed(payload)


def _fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, varint value or bytes) for each field of a message; ValueError when
    the bytes are not a message."""
    out: list[tuple[int, int, int | bytes]] = []
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, wire_type = key >> 3, key & 7
        payload: int | bytes
        if wire_type == _VARINT:
            payload, at = _read_varint(data, at)
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            payload, at = data[at : at + size], at + size
        elif wire_type == _LENGTH:
            size, at = _read_varint(data, at)
            payload, at = data[at : at + size], at + size
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if at > len(data):
            raise ValueError("truncated")
        out.append((number, wire_type, payload))
    return out


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, at


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
