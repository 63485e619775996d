"""Reading what a person would see in the stand-in, and waiting for the bot to get there."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bot.requests import RequestState
from bot.sandbox.driver import SlackDriver
from bot.sandbox.stack import LocalStack
from bot.sandbox.webapi import Message
from bot.slack import ids
from bot.store import Store
from tests.e2e.conftest import CHANNEL


def block_text(blocks: list[dict[str, Any]]) -> str:
    """All the text a person reads in blocks: sections, fields, headers, context, button labels."""
    parts: list[str] = []
    for block in blocks:
        for key in ("text",):
            if isinstance(block.get(key), dict):
                parts.append(str(block[key].get("text", "")))
        for item in block.get("fields") or []:
            parts.append(str(item.get("text", "")))
        for element in block.get("elements") or []:
            if isinstance(element.get("text"), dict):
                parts.append(str(element["text"].get("text", "")))
            elif isinstance(element.get("text"), str):
                parts.append(element["text"])
    return "\n".join(parts)


def message_text(message: Message) -> str:
    return message.text + "\n" + block_text(message.blocks)


def action_ids(message: Message) -> list[str]:
    return [
        str(element.get("action_id"))
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block.get("elements") or []
    ]


def button_value(message: Message, action_id: str) -> str:
    for block in message.blocks:
        for element in block.get("elements") or []:
            if element.get("action_id") == action_id:
                return str(element["value"])
    raise AssertionError(f"no {action_id} button in message {message.ts}")


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll a sync or async predicate until truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def top_level_messages(stack: LocalStack, channel: str = CHANNEL) -> list[Message]:
    return [m for m in stack.slack.messages(channel) if not m.is_reply]


async def make_request(
    stack: LocalStack, driver: SlackDriver, user: str, text: str, channel: str = CHANNEL
) -> tuple[Message, str]:
    """Send `/unlock-nodes text` and return the approval message it produced and the request ID."""
    before = len(top_level_messages(stack, channel))
    response = await driver.command(user, channel, text)
    assert response.status_code == 200, response.text
    message = await wait_until(
        lambda: len(top_level_messages(stack, channel)) > before and top_level_messages(stack, channel)[-1]
    )
    return message, button_value(message, ids.APPROVE_ACTION)


async def wait_for_state(store: Store, request_id: str, *states: RequestState, timeout: float = 15.0) -> Any:
    async def reached() -> Any:
        request = await store.get_request(request_id)
        return request if request is not None and request.state in states else None

    return await wait_until(reached, timeout=timeout)


def current(stack: LocalStack, message: Message) -> Message:
    found = stack.slack.message(message.channel, message.ts)
    assert found is not None
    return found


def thread_replies(stack: LocalStack, message: Message) -> list[Message]:
    return [m for m in stack.slack.thread(message.channel, message.ts) if m.ts != message.ts]


def ephemeral_texts(stack: LocalStack, user: str) -> list[str]:
    return [e.text + "\n" + block_text(e.blocks) for e in stack.slack.ephemerals(user=user)]


def unlock_calls(stack: LocalStack) -> list[Any]:
    return stack.simulator.calls_snapshot("batch_unlock")
