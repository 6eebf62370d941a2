"""Ranking agreement metrics, RBO checked against published reference values."""

from __future__ import annotations

import math
import string

import pytest

from health.ranking import kendall_tau, rbo, topk_overlap

ABC = string.ascii_lowercase

# Reference RBO_ext values from the test data of the `rbo` Rust crate (github.com/mpetri/rbo, commit
# 30330384bb2308bdc51c4b08ac9fed7a6bda8946), whose tests are named `ext_*_comparison_to_william_webber`:
# values William Webber's own implementation gave, to 6 decimals.
# test_data/uneven_abc.json: "abcdefghijklmnopqrstuvwxyz" against a shorter list of other letters.
UNEVEN = [
    ("drfuoxnpszeva", 0.1, 0.000246),
    ("akdwcjomxrubqitenhspyl", 0.1, 0.948509),
    ("kapotqxc", 0.1, 0.048245),
    ("av", 0.2, 0.900000),
    ("aptkn", 0.2, 0.892587),
    ("bncxagm", 0.2, 0.105466),
    ("auzemcwhrtjvbfqxyk", 0.4, 0.772647),
    ("ma", 0.4, 0.200001),
    ("f", 0.9, 0.053090),
    ("bj", 0.9, 0.474895),
    ("zclx", 0.9, 0.233312),
    ("fcjdeoa", 0.9, 0.557926),
    ("bafnecwvlog", 0.9, 0.620766),
    ("aiklgrjsmdy", 0.9, 0.514171),
    ("l", 0.99, 0.036660),
    ("kxcnarvmwyp", 0.99, 0.529392),
    ("bduchnvsoylzeqwiatmpjxrk", 0.99, 0.897842),
]
# test_data/permute_abc.json: the letters of `other`, sorted, against `other` (same items, other order).
PERMUTED = [
    ("jtnxyzovchmfldbksguqewari", 0.9, 0.256365),
    ("agmtrsyhfidnjobwzkxvucqel", 0.5, 0.696746),
    ("erqalcnuhjvoxgiybskzdtmwf", 0.8, 0.223077),
    ("achudyxfktsrzwbgqjenolivm", 0.99, 0.919628),
]


@pytest.mark.parametrize(("other", "p", "expected"), UNEVEN)
def test_rbo_of_uneven_lists_matches_the_reference(other: str, p: float, expected: float) -> None:
    assert rbo(list(ABC), list(other), p) == pytest.approx(expected, abs=6e-7)
    assert rbo(list(other), list(ABC), p) == pytest.approx(expected, abs=6e-7)  # symmetric


@pytest.mark.parametrize(("other", "p", "expected"), PERMUTED)
def test_rbo_of_permutations_matches_the_reference(other: str, p: float, expected: float) -> None:
    assert rbo(sorted(other), list(other), p) == pytest.approx(expected, abs=6e-7)


def test_rbo_of_identical_lists_is_exactly_one() -> None:
    assert rbo(list(ABC), list(ABC)) == 1.0
    assert rbo([7], [7], 0.5) == 1.0
    assert rbo([], []) == 1.0


def test_rbo_of_disjoint_lists_is_zero() -> None:
    assert rbo([1, 2, 3], [4, 5, 6, 7]) == 0.0
    assert rbo([], [1, 2]) == 0.0


def test_rbo_of_two_swapped_items_by_hand() -> None:
    # [1, 2] against [2, 1], p = 0.9: X_1 = 0, X_2 = 2, s = l = 2, so
    # RBO_ext = (1-p)/p * (0/1 * p + 2/2 * p^2) + (0/2 + 2/2) * p^2 = 0.1 * 0.9 + 0.81 = 0.9
    assert rbo([1, 2], [2, 1], 0.9) == pytest.approx(0.9, abs=1e-12)


def test_rbo_of_a_prefix_extrapolates_to_full_agreement_by_hand() -> None:
    # S = [1], L = [1, 2], p = 0.5: X_1 = 1, X_2 = 1 (all of S within L's first 2), s = 1, l = 2:
    # (1-p)/p * (1/1 * p + 1/2 * p^2 + X_s (2-1)/(1*2) * p^2) + ((1 - 1)/2 + 1/1) * p^2
    # = 1 * (0.5 + 0.125 + 0.125) + 0.25 = 1.0: S's unseen tail is assumed to keep agreeing.
    assert rbo([1], [1, 2], 0.5) == pytest.approx(1.0, abs=1e-12)


def test_rbo_weighs_the_top_more_than_the_tail() -> None:
    base = list(range(10))
    top_swapped = [1, 0, *base[2:]]
    tail_swapped = [*base[:8], 9, 8]
    assert rbo(base, top_swapped) < rbo(base, tail_swapped) < 1.0


def test_rbo_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="p must be"):
        rbo([1], [1], 1.0)
    with pytest.raises(ValueError, match="twice"):
        rbo([1, 1], [1])


def test_topk_overlap() -> None:
    assert topk_overlap([1, 2, 3, 4], [4, 3, 2, 1], 4) == 1.0
    assert topk_overlap([1, 2, 3, 4], [2, 1, 9, 8], 2) == 1.0
    assert topk_overlap([1, 2, 3, 4], [1, 9, 3, 8], 4) == 0.5
    assert topk_overlap([1, 2, 3], [1, 2, 3], 50) == 1.0  # k beyond the lists: their length counts
    assert topk_overlap([1, 2, 3, 4], [1, 2], 4) == 0.5  # two of the four were dropped
    assert topk_overlap([], [], 10) == 1.0
    assert topk_overlap([1], [2], 10) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        topk_overlap([1], [1], 0)


def test_kendall_tau_over_the_common_items() -> None:
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one discordant pair of six: (6 - 2 * 1) / 6
    assert kendall_tau([1, 2, 3, 4], [2, 1, 3, 4]) == pytest.approx(4 / 6)
    # items only one list ranks are left out: the common ones (1, 2, 3) are in the same order
    assert kendall_tau([1, 9, 2, 3], [1, 2, 8, 3]) == 1.0
    assert math.isnan(kendall_tau([1, 2], [2, 3]))
