"""Undecodable bodies: what is wrong, found by walking the wire format, and handed over instead of raising."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from gateway.decode_guard import Undecodable, guard_deserializer
from gateway.wire_problem import wire_problem
from quasar.v1 import feed_pb2

FEED = feed_pb2.GetFeedRequest.DESCRIPTOR


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\x10\x80", "field 'member_id' at byte 0: truncated varint"),
        (b"\x10" + b"\xff" * 11, "field 'member_id' at byte 0: varint longer than 10 bytes"),
        (b"\x22\x05ab", "field 'workflow' at byte 0: length 5 runs past the end (2 bytes left)"),
        (b"\x22\x02\xff\xfe", "field 'workflow' is not valid UTF-8"),
        (b"\x2a\x04\x0a\x02\xc3\x28", "field 'context' entry: field 'key' is not valid UTF-8"),
        (
            b"\x2a\x02\x12\x09",
            "field 'context' entry: field 'value' at byte 2: length 9 runs past the end (0 bytes left)",
        ),
        (b"\x0e", "invalid wire type 6 in the tag at byte 0"),
        (b"\x04", "invalid field number 0 at byte 0"),
        (b"\x0b\x08\x01", "field 'request_id' (group): group is not closed before the end of the body"),
        (b"\x0c", "unexpected end-group tag for field 1 at byte 0"),
        (b"\x4d\x01\x02", "field 9 at byte 0: 4-byte value cut short by the end of the body"),
    ],
)
def test_the_first_problem_is_named(body: bytes, problem: str) -> None:
    assert wire_problem(FEED, body) == problem
    with pytest.raises(DecodeError):  # the premise: protobuf itself refuses these
        feed_pb2.GetFeedRequest.FromString(body)


def test_packed_and_nested_fields_of_the_inference_protocol() -> None:
    request = service_pb2.ModelInferRequest.DESCRIPTOR
    inputs = request.fields_by_name["inputs"].number << 3 | 2
    tensor = bytes([inputs, 0x03]) + b"\x0a\x01x"  # inputs[0].name = "x": valid
    shape = bytes([inputs, 0x04, 0x1A, 0x02, 0x80, 0x80])  # inputs[0].shape (field 3) packed, its varint cut short
    assert wire_problem(request, tensor) is None
    assert wire_problem(request, shape) == "field 'inputs' message: field 'shape': packed value: truncated varint"
    with pytest.raises(DecodeError):
        service_pb2.ModelInferRequest.FromString(shape)


def test_a_guarded_deserializer_returns_undecodable_instead_of_raising() -> None:
    deserialize = guard_deserializer(feed_pb2.GetFeedRequest.FromString, "/quasar.v1.FeedService/GetFeed")
    assert deserialize(feed_pb2.GetFeedRequest(member_id=3).SerializeToString()).member_id == 3
    refused = deserialize(b"\x22\x02\xff\xfe")
    assert refused == Undecodable("quasar.v1.GetFeedRequest", "field 'workflow' is not valid UTF-8")
    assert (
        refused.detail
        == "request body is not a valid quasar.v1.GetFeedRequest message: field 'workflow' is not valid UTF-8"
    )


def test_an_unknown_deserializer_is_named_by_its_method() -> None:
    def parse(body: bytes) -> feed_pb2.GetFeedRequest:
        return feed_pb2.GetFeedRequest.FromString(body)

    refused = guard_deserializer(parse, "/svc/M")(b"\x0e")
    assert (
        refused.detail
        == "request body is not a valid request message for /svc/M message: invalid wire type 6 in the tag at byte 0"
    )
