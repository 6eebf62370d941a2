from __future__ import annotations

import pytest

from gateway.backlog import PENDING_HARD_LIMIT, PENDING_SOFT_LIMIT, backlog_options


def test_bounds_core_pending_list_soft_and_hard() -> None:
    assert dict(backlog_options(16)) == {PENDING_SOFT_LIMIT: 16, PENDING_HARD_LIMIT: 32}


def test_refuses_an_unbounded_or_empty_queue() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        backlog_options(0)
