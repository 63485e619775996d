"""`Store.first_delivery` under a burst: concurrent calls share one INSERT, and each still learns its own verdict."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event

from bot.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def count_transactions(store: Store) -> list[int]:
    counter = [0]

    def on_begin(conn: Any) -> None:
        counter[0] += 1

    event.listen(store.engine.sync_engine, "begin", on_begin)
    return counter


async def test_a_burst_is_recorded_in_a_few_transactions(store: Store) -> None:
    await store.first_delivery("warm-up", T0)  # the pool's first connection
    began = count_transactions(store)
    keys = [f"command:{i}" for i in range(200)]
    verdicts = await asyncio.gather(*(store.first_delivery(key, T0) for key in keys))
    assert verdicts == [True] * 200
    assert began[0] <= 3  # one per batch, not 200

    again = await asyncio.gather(*(store.first_delivery(key, T0) for key in [*keys[:50], "command:new"]))
    assert again == [False] * 50 + [True]


async def test_a_key_twice_in_one_batch_is_first_once(store: Store) -> None:
    verdicts = await asyncio.gather(*(store.first_delivery(key, T0) for key in ["a", "b", "a", "a", "b", "c"]))
    assert verdicts == [True, True, False, False, False, True]


async def test_a_failed_write_fails_every_caller_of_its_batch_and_the_next_batch_works(store: Store) -> None:
    original = store._insert_deliveries
    calls = 0

    async def failing_once(keys: dict[str, datetime]) -> set[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database is locked")
        return await original(keys)

    store._insert_deliveries = failing_once  # type: ignore[method-assign]
    results = await asyncio.gather(*(store.first_delivery(f"k{i}", T0) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await store.first_delivery("k0", T0)  # nothing was recorded by the failed batch


async def test_a_cancelled_caller_does_not_take_the_verdict_from_a_repeat(store: Store) -> None:
    first = asyncio.ensure_future(store.first_delivery("dup", T0))
    second = asyncio.ensure_future(store.first_delivery("dup", T0))
    await asyncio.sleep(0)  # both queued for the same write
    first.cancel()
    assert await second is True
    with pytest.raises(asyncio.CancelledError):
        await first
