from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kvstore.errors import StoreTimeout, StoreUnavailable
from kvstore.fake import InMemoryStore


async def started() -> InMemoryStore:
    store = InMemoryStore()
    store.put("item", [1, 2], np.ones((2, 3)), version="v1")
    await store.start()
    return store


async def test_records_lookups() -> None:
    store = await started()
    await store.lookup("item", np.array([2, 9]), version="v1", timeout_s=0.5)
    [call] = store.lookups
    assert (call.table, call.version, call.ids.tolist(), call.timeout_s) == ("item", "v1", [2, 9], 0.5)


async def test_fail_with_a_given_error_per_table() -> None:
    store = await started()
    store.put("user", [1], np.ones((1, 3)))
    store.fail_with(StoreUnavailable("redis down"), table="item")
    with pytest.raises(StoreUnavailable, match="redis down"):
        await store.lookup("item", np.array([1]), version="v1")
    assert (await store.lookup("user", np.array([1]), version="v1")).found.all()
    store.fail_with(None, table="item")
    assert (await store.lookup("item", np.array([1]), version="v1")).found.all()


async def test_block_until_an_event_and_time_out() -> None:
    store = await started()
    gate = asyncio.Event()
    store.block_until(gate)
    with pytest.raises(StoreTimeout):
        await store.lookup("item", np.array([1]), version="v1", timeout_s=0.01)
    store.entered.clear()
    pending = asyncio.create_task(store.lookup("item", np.array([1]), version="v1"))
    await store.entered.wait()
    assert not pending.done()
    gate.set()
    assert (await pending).found.all()


def test_put_rejects_duplicate_ids() -> None:
    with pytest.raises(ValueError, match="unique"):
        InMemoryStore().put("t", [1, 1], np.ones((2, 2)))
