"""Why a request body is not a valid protobuf message, in words a client can act on.

Protobuf's own parser only says "Error parsing message"; this walks the wire format (tags, varints,
lengths, groups) with the message's descriptor and names the first thing wrong: a truncated varint, a
length that runs past the end, an invalid wire type or field number, invalid UTF-8 in a string field,
a packed field cut mid-value. It runs only after the parser has refused a body, so it is off the
request path of every valid call.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_VARINT, _I64, _LEN, _GROUP_START, _GROUP_END, _I32 = 0, 1, 2, 3, 4, 5
_MAX_DEPTH = 100  # protobuf's own recursion limit
_MAX_FIELD_NUMBER = (1 << 29) - 1
_FIXED_WIDTH = {
    FieldDescriptor.TYPE_DOUBLE: 8,
    FieldDescriptor.TYPE_FIXED64: 8,
    FieldDescriptor.TYPE_SFIXED64: 8,
    FieldDescriptor.TYPE_FLOAT: 4,
    FieldDescriptor.TYPE_FIXED32: 4,
    FieldDescriptor.TYPE_SFIXED32: 4,
}
_VARINT_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_BOOL,
    FieldDescriptor.TYPE_ENUM,
}


class _Problem(Exception):
    pass


def wire_problem(descriptor: Descriptor | None, body: bytes) -> str | None:
    """The first problem found in `body` read as a `descriptor` message (None: read as unknown fields),
    e.g. "field 'context' entry: field 'key' is not valid UTF-8", or None when the walk finds nothing
    (the parser refused it for a reason not checked here, such as nesting deeper than 100 levels)."""
    try:
        _walk(memoryview(body), 0, len(body), descriptor, "", 0, None)
    except _Problem as problem:
        return str(problem)
    return None


def _walk(
    buf: memoryview, pos: int, end: int, descriptor: Descriptor | None, where: str, depth: int, group: int | None
) -> int:
    """Check the fields in buf[pos:end]; returns where they end (for a group: after its end tag)."""
    if depth > _MAX_DEPTH:
        raise _Problem(f"{where}nested more than {_MAX_DEPTH} levels deep")
    while pos < end:
        start = pos
        tag, pos = _varint(buf, pos, end, f"{where}field tag at byte {start}")
        number, wire = tag >> 3, tag & 7
        if number == 0 or number > _MAX_FIELD_NUMBER:
            raise _Problem(f"{where}invalid field number {number} at byte {start}")
        field = descriptor.fields_by_number.get(number) if descriptor is not None else None
        name = f"{where}field {field.name!r}" if field is not None else f"{where}field {number}"
        if wire == _VARINT:
            _, pos = _varint(buf, pos, end, f"{name} at byte {start}")
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if pos + width > end:
                raise _Problem(f"{name} at byte {start}: {width}-byte value cut short by the end of the body")
            pos += width
        elif wire == _LEN:
            length, pos = _varint(buf, pos, end, f"{name} length at byte {start}")
            if length > end - pos:
                raise _Problem(f"{name} at byte {start}: length {length} runs past the end ({end - pos} bytes left)")
            if field is not None:
                _check_value(buf, pos, pos + length, field, name, depth)
            pos += length
        elif wire == _GROUP_START:
            pos = _walk(buf, pos, end, None, f"{name} (group): ", depth + 1, number)
        elif wire == _GROUP_END:
            if group == number:
                return pos
            raise _Problem(f"{where}unexpected end-group tag for field {number} at byte {start}")
        else:
            raise _Problem(f"{where}invalid wire type {wire} in the tag at byte {start}")
    if group is not None:
        raise _Problem(f"{where}group is not closed before the end of the body")
    return pos


def _check_value(buf: memoryview, pos: int, end: int, field: FieldDescriptor, name: str, depth: int) -> None:
    """A length-delimited value of a known field: string, nested message, or packed scalars."""
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            str(buf[pos:end], "utf-8")
        except UnicodeDecodeError:
            raise _Problem(f"{name} is not valid UTF-8") from None
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        kind = "entry" if field.message_type.GetOptions().map_entry else "message"
        _walk(buf, pos, end, field.message_type, f"{name} {kind}: ", depth + 1, None)
    elif field.type in _FIXED_WIDTH:
        width = _FIXED_WIDTH[field.type]
        if (end - pos) % width:
            raise _Problem(f"{name}: {end - pos} packed bytes are not a whole number of {width}-byte values")
    elif field.type in _VARINT_TYPES:
        while pos < end:
            _, pos = _varint(buf, pos, end, f"{name}: packed value")


def _varint(buf: memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end:
            raise _Problem(f"{what}: truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _Problem(f"{what}: varint longer than 10 bytes")
