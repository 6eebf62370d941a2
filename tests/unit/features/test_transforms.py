"""The derived-feature transforms: values, and the same bits for a request-level row broadcast (serving)
as for that row repeated once per candidate (training), since a model is trained on the latter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import transforms


@st.composite
def rows_and_lists(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 40))
    width = draw(st.integers(1, 33))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    member = rng.normal(size=(1, width)).astype(np.float32)
    items = rng.normal(size=(n, width)).astype(np.float32)
    member_list = np.where(rng.random((1, 7)) < 0.3, -1, rng.integers(0, 50, size=(1, 7)))
    item_lists = np.where(rng.random((n, 4)) < 0.3, -1, rng.integers(0, 50, size=(n, 4)))
    return member, items, member_list.astype(np.int64), item_lists.astype(np.int64)


@settings(max_examples=80, deadline=None)
@given(rows_and_lists())
def test_a_broadcast_row_gives_the_bits_of_the_repeated_row(
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    member, items, member_list, item_lists = data
    n = len(items)
    repeated, repeated_list = np.repeat(member, n, axis=0), np.repeat(member_list, n, axis=0)
    for transform in (transforms.dot, transforms.cosine):
        served, trained = transform(member, items), transform(repeated, items)
        assert served.shape == trained.shape == (n, 1)
        assert served.dtype == np.float32
        np.testing.assert_array_equal(served, trained)
    np.testing.assert_array_equal(
        transforms.overlap(item_lists, member_list), transforms.overlap(item_lists, repeated_list)
    )
    ids = item_lists[:, :1]
    np.testing.assert_array_equal(transforms.contains(member_list, ids), transforms.contains(repeated_list, ids))


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 60),
    st.integers(0, 90),
    st.sampled_from([10, 1_000, 2**40]),
)
def test_membership_against_a_request_level_list_matches_python_sets(seed: int, n: int, listed: int, span: int) -> None:
    """contains/overlap with one member list: ids anywhere in a small or huge range, padding, repeats, an
    empty list, ids below and above every listed one."""
    rng = np.random.default_rng(seed)
    member_list = np.where(rng.random((1, max(listed, 1))) < 0.2, -1, rng.integers(0, span, (1, max(listed, 1))))
    member_list = member_list[:, :listed] if listed else np.full((1, 3), -1)
    item_lists = np.where(rng.random((n, 4)) < 0.3, -1, rng.integers(0, span, (n, 4)))
    item_lists[rng.random((n, 4)) < 0.2] = member_list[0, 0] if listed else 5  # some hits in any range
    ids = item_lists[:, :1]
    held = {int(v) for v in member_list[0] if v >= 0}

    expected_contains = [[1.0 if v >= 0 and int(v) in held else 0.0] for v in ids[:, 0]]
    np.testing.assert_array_equal(transforms.contains(member_list, ids), expected_contains)
    expected_overlap = []
    for row in item_lists:
        valid = [int(v) for v in row if v >= 0]
        expected_overlap.append([sum(v in held for v in valid) / max(len(valid), 1)])
    np.testing.assert_allclose(transforms.overlap(item_lists, member_list), expected_overlap, rtol=1e-6)


def test_values() -> None:
    a = np.array([[1.0, 2.0, 3.0]], np.float32)
    b = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(transforms.dot(a, b), [[4.0], [0.0]])
    np.testing.assert_allclose(transforms.cosine(a, b), [[4.0 / np.sqrt(14.0) / np.sqrt(2.0)], [0.0]], rtol=1e-6)
    lists = np.array([[3, 5, -1, -1], [-1, -1, -1, -1], [7, 7, 9, -1]], np.int64)
    follows = np.array([[5, 7, -1]], np.int64)
    np.testing.assert_allclose(transforms.overlap(lists, follows), [[0.5], [0.0], [2 / 3]], rtol=1e-6)
    per_row = np.array([[5], [1], [9]], np.int64)
    np.testing.assert_allclose(transforms.overlap(lists, per_row), [[0.5], [0.0], [1 / 3]], rtol=1e-6)
    np.testing.assert_array_equal(transforms.contains(follows, np.array([[7], [3], [-1]])), [[1.0], [0.0], [0.0]])
    np.testing.assert_array_equal(transforms.one_hot(np.array([[2], [4]]), (1, 2, 3)), [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(transforms.age(np.array([[0], [200]]), now_s=100.0, unit_s=50.0), [[2.0], [0.0]])
    np.testing.assert_allclose(transforms.log1p(np.array([[-1.0], [np.e - 1]])), [[0.0], [1.0]], rtol=1e-6)


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_pool_adds_the_listed_rows_in_order_and_skips_padding(mode: str) -> None:
    vectors = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]], np.float32)
    positions = np.array([[0, 2, -1], [-1, -1, -1], [1, 1, 1]], np.int64)
    pooled = transforms.pool(vectors, positions, mode)
    sums = np.array([[5.0, 50.0], [0.0, 0.0], [6.0, 60.0]], np.float32)
    expected = sums if mode == "sum" else sums / np.array([[2.0], [1.0], [3.0]], np.float32)
    np.testing.assert_allclose(pooled, expected, rtol=1e-7)
    assert pooled.dtype == np.float32
    assert transforms.pool(vectors, np.zeros((2, 0), np.int64), mode).shape == (2, 2)
