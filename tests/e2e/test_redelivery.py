"""A re-delivered command is acknowledged like the first delivery and does nothing more.

The delivery record is written while the acknowledgement goes out (bot/slack/app.py, `DeliveryAck`), so
these check what a person sees: one approval message, one request, and an ack for every delivery.
"""

from __future__ import annotations

import asyncio

from bot.sandbox.driver import SlackDriver
from bot.sandbox.stack import LocalStack
from bot.store import Store
from tests.e2e.conftest import CHANNEL, REQUESTER
from tests.e2e.helpers import ephemeral_texts, top_level_messages, wait_until


async def test_a_redelivered_command_creates_one_request(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    node = stack.simulator.locked_nodes("pool-prod-a")[0]
    first = await driver.command(REQUESTER, CHANNEL, f"pool-prod-a {node}")
    again = await asyncio.gather(driver.redeliver(1), driver.redeliver(2))
    assert [r.status_code for r in (first, *again)] == [200, 200, 200]

    await wait_until(lambda: top_level_messages(stack))
    await wait_until(lambda: any("waiting for approval" in t for t in ephemeral_texts(stack, REQUESTER)))
    await asyncio.sleep(0.5)  # time for a duplicate to show up, were there one
    assert len(top_level_messages(stack)) == 1
    assert sum("waiting for approval" in t for t in ephemeral_texts(stack, REQUESTER)) == 1
    created = [e for e in await store.audit_events() if e.event == "created"]
    assert len(created) == 1


async def test_a_redelivered_malformed_command_gets_the_same_answer(stack: LocalStack, driver: SlackDriver) -> None:
    first = await driver.command(REQUESTER, CHANNEL, "pool-prod-a node-1 --frobnicate")
    again = await driver.redeliver()
    assert first.status_code == again.status_code == 200
    assert "--frobnicate" in first.text and again.text == first.text
