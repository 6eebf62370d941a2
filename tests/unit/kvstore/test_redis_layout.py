"""The Redis key layout and the numpy-packed commands (no sockets)."""

from __future__ import annotations

import hiredis
import numpy as np
import pytest

from kvstore._redis_layout import Layout, VersionMeta, check_name, current_key, versions_key
from kvstore._redis_wire import RedisAddress


def test_keys_are_fixed_width_and_carry_their_bucket_in_the_hash_tag() -> None:
    layout = Layout("qe", "item", "v1", 16)
    assert layout.key(12345) == b"qe:{item:v1:09}:0000000000003039"  # 12345 % 16 = 9
    assert layout.key(-1) == b"qe:{item:v1:15}:ffffffffffffffff"  # two's complement; -1 mod 16 = 15
    assert layout.key(3) == b"qe:{item:v1:03}:0000000000000003"
    keys = layout.keys(np.array([0, 1, 2**63 - 1, -(2**63)], dtype=np.int64))
    assert {len(k) for k in keys} == {layout.key_length}
    assert Layout("qe", "item", "v1", 1).key(7) == b"qe:{item:v1:0}:0000000000000007"
    assert layout.scan_pattern() == b"qe:{item:v1:*"


@pytest.mark.parametrize("command", [b"MGET", b"EXISTS"])
def test_packed_commands_equal_hiredis_packing(command: bytes) -> None:
    layout = Layout("prefix", "t", "s7-0123456789ab", 100)
    ids = np.random.default_rng(0).integers(-(2**40), 2**40, size=1500).astype(np.int64)
    assert layout.pack(command, ids) == hiredis.pack_command((command, *layout.keys(ids)))


def test_metadata_keys_and_json() -> None:
    assert current_key("qe") == b"qe:current"
    assert versions_key("qe", "item") == b"qe:versions:{item}"
    meta = VersionMeta(dim=4, dtype="float16", count=10, buckets=16, created_at="2026-01-01T00:00:00", state="complete")
    assert VersionMeta.from_json(meta.to_json()) == meta


def test_names_cannot_move_the_hash_tag() -> None:
    for bad in ("a{b", "a}b", "a*", "", ".hidden", "a:b"):
        with pytest.raises(ValueError, match="must match"):
            check_name("table", bad)
    assert check_name("version", "s7-abc_1.2") == "s7-abc_1.2"


def test_urls() -> None:
    address = RedisAddress.parse("redis://user:p%40ss@cache.local:7000/2")
    assert (address.host, address.port, address.db, address.username, address.password) == (
        "cache.local",
        7000,
        2,
        "user",
        "p@ss",
    )
    assert str(RedisAddress.parse("redis://h")) == "redis://h:6379/0"
    for bad, message in (
        ("http://h", "expected a redis://"),
        ("redis://h/x", "must be a number"),
        ("redis://h:99999", "bad port"),
    ):
        with pytest.raises(ValueError, match=message):
            RedisAddress.parse(bad)
