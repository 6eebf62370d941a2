from __future__ import annotations

import numpy as np
import pytest

from kvstore.codec import header, pack_rows, unpack_rows
from kvstore.errors import CorruptValue


def matrix(n: int = 6, dim: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_float32_round_trip_is_exact() -> None:
    m = matrix()
    values = pack_rows(m, "float32", "v20250101")
    assert len(values) == 6
    assert all(len(v) == len(header("float32", 5, "v20250101")) + 5 * 4 for v in values)
    vectors, found = unpack_rows(values, 5, "v20250101")
    assert vectors.dtype == np.float32
    assert found.all()
    np.testing.assert_array_equal(vectors, m)


def test_float16_round_trip_within_float16_precision() -> None:
    m = matrix()
    vectors, found = unpack_rows(pack_rows(m, "float16", "v1"), 5, "v1")
    assert found.all()
    np.testing.assert_array_equal(vectors, m.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(vectors, m, rtol=1e-3, atol=1e-4)


def test_absent_values_are_zero_rows_not_found() -> None:
    m = matrix(3)
    a, b, _c = pack_rows(m, "float32", "v1")
    vectors, found = unpack_rows([None, b, None, a], 5, "v1")
    assert found.tolist() == [False, True, False, True]
    np.testing.assert_array_equal(vectors[[0, 2]], 0)
    np.testing.assert_array_equal(vectors[[1, 3]], m[[1, 0]])
    empty, none_found = unpack_rows([None, None], 5, "v1")
    assert empty.shape == (2, 5)
    assert not none_found.any()
    assert unpack_rows([], 5, "v1")[0].shape == (0, 5)


def test_mixed_storage_dtypes_of_one_version_decode() -> None:
    m = matrix(2)
    mixed = [pack_rows(m[:1], "float16", "v1")[0], pack_rows(m[1:], "float32", "v1")[0]]
    vectors, found = unpack_rows(mixed, 5, "v1")
    assert found.all()
    np.testing.assert_array_equal(vectors[1], m[1])
    np.testing.assert_allclose(vectors[0], m[0], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda v: b"XX" + v[2:], "value 1: bad magic/format b'XX'/1"),
        (lambda v: v[:-1], "value 1: 30 bytes, expected 31 for float32 x 5"),
        (lambda v: v[:5], "value 1: 5 bytes, shorter than a header"),
        (lambda v: v[:3] + b"\x09" + v[4:], "value 1: unknown dtype code 9"),
    ],
    ids=["magic", "truncated", "short", "dtype-code"],
)
def test_corruption_names_the_value(corrupt: object, message: str) -> None:
    values = pack_rows(matrix(3), "float32", "v1")
    values[1] = corrupt(values[1])  # type: ignore[operator]
    with pytest.raises(CorruptValue, match=message):
        unpack_rows(values, 5, "v1", table="item")


def test_a_value_of_another_version_or_dim_is_rejected() -> None:
    values = pack_rows(matrix(3), "float32", "v1")
    with pytest.raises(CorruptValue, match="value 0: version 'v1', expected 'v2'"):
        unpack_rows(values, 5, "v2")
    # Same length as the expected version, so the batched header check has to catch it.
    with pytest.raises(CorruptValue, match="value 0: version 'v1', expected 'v9'"):
        unpack_rows(values, 5, "v9")
    with pytest.raises(CorruptValue, match="value 0: dim 5, expected 4"):
        unpack_rows(values, 4, "v1")
    mixed = [*values[:2], pack_rows(matrix(1), "float32", "v2")[0]]
    with pytest.raises(CorruptValue, match="value 2: version 'v2'"):
        unpack_rows(mixed, 5, "v1")


def test_pack_rejects_bad_matrices_and_versions() -> None:
    with pytest.raises(ValueError, match="2-D"):
        pack_rows(np.zeros(4), "float32", "v1")
    with pytest.raises(ValueError, match="not finite as float16"):
        pack_rows(np.full((1, 2), 70000.0), "float16", "v1")
    with pytest.raises(ValueError, match="dtype must be one of"):
        pack_rows(matrix(), "float64", "v1")
    with pytest.raises(ValueError, match=r"1\.\.255 ASCII"):
        pack_rows(matrix(), "float32", "v" * 256)
