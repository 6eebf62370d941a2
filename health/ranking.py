"""How much two rankings of items agree: top-K overlap, Kendall's tau, rank-biased overlap.

A ranking is a sequence of distinct hashable items, best first. The lists compared may differ in length
and in the items they hold (a replay that dropped some candidates, a model that ranks others first).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from scipy.stats import kendalltau


def topk_overlap(a: Sequence[Hashable], b: Sequence[Hashable], k: int) -> float:
    """|top-k(a) ∩ top-k(b)| / min(k, longer list's length), in [0, 1]: 1.0 when the top k hold the same
    items in any order (two empty lists included), 0.0 when they share none."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    depth = min(k, max(len(a), len(b)))
    if depth == 0:
        return 1.0
    return len(set(a[:k]) & set(b[:k])) / depth


def kendall_tau(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Kendall's tau between the orders `a` and `b` give the items both rank (items only one ranks are
    left out), in [-1, 1]; NaN when fewer than two items are common (no pair to order)."""
    position = {item: i for i, item in enumerate(b)}
    common = [(i, position[item]) for i, item in enumerate(a) if item in position]
    if len(common) < 2:
        return math.nan
    if all(common[j][1] < common[j + 1][1] for j in range(len(common) - 1)):
        return 1.0  # the same order: exactly 1, not the float rounding of P / sqrt(P * P)
    return float(kendalltau([i for i, _ in common], [j for _, j in common]).statistic)


def rbo(a: Sequence[Hashable], b: Sequence[Hashable], p: float = 0.9) -> float:
    """Extrapolated rank-biased overlap RBO_ext (Webber, Moffat & Zobel 2010, eq. 32), in [0, 1].

    With S the shorter list (length s), L the longer (length l) and X_d the overlap at depth d (for d > s,
    the items of all of S among the first d of L):

        RBO_ext = (1-p)/p * ( sum_{d=1..l} X_d/d * p^d + sum_{d=s+1..l} X_s (d-s) / (s d) * p^d )
                  + ( (X_l - X_s)/l + X_s/s ) * p^l

    that is, the agreement seen is assumed to continue past the evaluated depth, and S's unseen items to
    agree with L at the rate seen at depth s. `p` (0 < p < 1) is the persistence: the top d ranks carry
    1 - p^d of the weight. Symmetric in `a` and `b`; 1.0 for identical lists (two empty lists included),
    0.0 for disjoint ones (or one empty). Items must be distinct within each list (ValueError).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    for name, ranking in (("a", a), ("b", b)):
        if len(set(ranking)) != len(ranking):
            raise ValueError(f"ranking {name} holds an item twice")
    if list(a) == list(b):
        return 1.0
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    n_short, n_long = len(short), len(long)
    if n_short == 0:
        return 0.0
    seen_short: set[Hashable] = set()
    seen_long: set[Hashable] = set()
    overlap = 0  # X_d
    overlap_s = 0  # X_s
    total = 0.0
    weight = 1.0  # p^d
    for d in range(1, n_long + 1):
        weight *= p
        item_long = long[d - 1]
        if d <= n_short:
            item_short = short[d - 1]
            if item_short == item_long:
                overlap += 1
            else:
                overlap += (item_short in seen_long) + (item_long in seen_short)
            seen_short.add(item_short)
            seen_long.add(item_long)
            if d == n_short:
                overlap_s = overlap
            total += overlap / d * weight
        else:
            overlap += item_long in seen_short
            total += (overlap / d + overlap_s * (d - n_short) / (n_short * d)) * weight
    return (1.0 - p) / p * total + ((overlap - overlap_s) / n_long + overlap_s / n_short) * weight
