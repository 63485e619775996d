"""A replica that loses its execution lease stops sending unlock calls: the new owner finishes the request."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.requests import RequestState
from bot.sandbox.driver import SlackDriver
from bot.sandbox.stack import LocalStack
from bot.slack import ids
from bot.store import Store
from bot.store.tables import requests
from bot.workflow import utcnow
from tests.e2e.conftest import APPROVER, CHANNEL, REQUESTER
from tests.e2e.helpers import make_request, unlock_calls, wait_for_state, wait_until


@pytest.fixture
def stack_options() -> dict[str, object]:
    # Six nodes, two per call, one call at a time, each held 1.5 s by the simulator: three calls in a row.
    return {"unlock_bot_lease_seconds": 0.9, "unlock_bot_chunk_size": 2, "unlock_bot_concurrency": 1}


async def test_lost_lease_stops_the_execution(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    nodes = stack.simulator.locked_nodes("pool-prod-a")[:6]
    message, request_id = await make_request(stack, driver, REQUESTER, "pool-prod-a " + " ".join(nodes))
    stack.simulator.update_faults(latency_by_route={"batch_unlock": 1.5})
    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    await wait_for_state(store, request_id, RequestState.EXECUTING)
    await wait_until(lambda: unlock_calls(stack) or stack.simulator.calls_snapshot())

    # Another replica takes the request over (as if this one had stalled past its lease).
    async with store.engine.begin() as conn:
        await conn.execute(
            update(requests)
            .where(requests.c.id == request_id)
            .values(lease_owner="another-replica", lease_until=utcnow() + timedelta(hours=1))
        )

    await asyncio.sleep(5.0)  # long enough for all three calls, had the execution gone on
    assert len(unlock_calls(stack)) == 1
    request = await store.get_request(request_id)
    assert request is not None and request.state is RequestState.EXECUTING  # left to its new owner
    events = [e.event for e in await store.audit_events() if e.request_id == request_id]
    assert "succeeded" not in events and "partially_failed" not in events
