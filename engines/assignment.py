"""The one assignment mechanism of Quasar: a member's stable point in [0, 1) per salt.

Route arms (a route's weighted targets), experiment buckets (the `rewrite` step) and release canaries all
place a member with `assignment_point(salt, member_id)`, so an assignment is the same on every worker
and after every restart (no Python `hash()`), and two experiments with different salts are independent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def assignment_point(salt: str, key: int) -> float:
    """A stable point in [0, 1) for (salt, key): blake2b of 'salt\\0key', as a fraction of 2**64."""
    digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign(salt: str, key: int, arms: Sequence[T]) -> T:
    """One of `arms`, each with an equal share of keys."""
    if not arms:
        raise ValueError("no arms to assign to")
    return arms[min(int(assignment_point(salt, key) * len(arms)), len(arms) - 1)]
