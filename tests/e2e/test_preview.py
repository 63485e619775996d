"""The live preview end to end: what approval would do to each node, read from the simulator before anyone approves."""

from __future__ import annotations

import asyncio

from bot.requests import NodeStatus, RequestState
from bot.sandbox.driver import SlackDriver
from bot.sandbox.stack import LocalStack
from bot.slack import ids
from bot.store import Store
from tests.e2e.conftest import APPROVER, CHANNEL, REQUESTER
from tests.e2e.helpers import (
    current,
    ephemeral_texts,
    make_request,
    message_text,
    thread_replies,
    unlock_calls,
    wait_for_state,
    wait_until,
)

GHOST = "os-node-created-ghost"  # no such node in the simulator's pool-prod-a


def unlocked_nodes(stack: LocalStack, pool: str) -> list[str]:
    locked = set(stack.simulator.locked_nodes(pool))
    return [n for n in stack.simulator.node_names(pool) if n not in locked]


def preview_section(text: str) -> list[str]:
    """The preview's lines in a message's text, from its heading to the end of the block."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("*Preview*", "*Dry run*")))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("•")), len(lines))
    return lines[start:end]


async def test_preview_shows_each_nodes_state(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    locked = stack.simulator.locked_nodes("pool-prod-a")[:2]
    free = unlocked_nodes(stack, "pool-prod-a")[:1]
    message, request_id = await make_request(stack, driver, REQUESTER, f"pool-prod-a {' '.join(locked + free)} {GHOST}")
    assert preview_section(message_text(message)) == [
        "*Preview* (lock state read from ModelArts now)",
        f"• 2 :unlock: will be unlocked: `{locked[0]}`, `{locked[1]}`",
        f"• 1 :white_circle: already unlocked, no-op: `{free[0]}`",
        f"• 1 :x: not in the pool, will fail: `{GHOST}`",
    ]
    assert await store.preview(request_id) == {
        locked[0]: "locked",
        locked[1]: "locked",
        free[0]: "unlocked",
        GHOST: "missing",
    }
    assert unlock_calls(stack) == []

    # Long lists: counts always, names only where they stay short.
    big_locked = stack.simulator.locked_nodes("pool-big")[:12]
    big_free = unlocked_nodes(stack, "pool-big")[:13]
    message, _ = await make_request(stack, driver, REQUESTER, f"pool-big {' '.join(big_locked + big_free)}")
    lines = preview_section(message_text(message))
    assert lines[1] == "• 12 :unlock: will be unlocked"
    assert (
        lines[2]
        == "• 13 :white_circle: already unlocked, no-op: " + ", ".join(f"`{n}`" for n in big_free[:10]) + " and 3 more"
    )
    assert len(lines) == 3


async def test_preview_is_gone_once_decided(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    node = stack.simulator.locked_nodes("pool-prod-a")[0]
    message, request_id = await make_request(stack, driver, REQUESTER, f"pool-prod-a {node}")
    assert "will be unlocked" in message_text(message)
    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    await wait_for_state(store, request_id, RequestState.SUCCEEDED)
    final = await wait_until(lambda: "Succeeded" in message_text(current(stack, message)) and current(stack, message))
    assert "Preview" not in message_text(final) and "will be unlocked" not in message_text(final)


async def test_dry_run_only_tells_the_requester(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    locked = stack.simulator.locked_nodes("pool-prod-a")[:2]
    free = unlocked_nodes(stack, "pool-prod-a")[:1]
    response = await driver.command(
        REQUESTER, CHANNEL, f"pool-prod-a {' '.join(locked + free)} {GHOST} --reason 'check' --dry-run"
    )
    assert response.status_code == 200
    told = await wait_until(lambda: [t for t in ephemeral_texts(stack, REQUESTER) if "Dry run" in t])
    assert preview_section(told[0]) == [
        "*Dry run* — nothing was requested. `pool-prod-a`, 4 nodes:",
        f"• 2 will be unlocked: `{locked[0]}`, `{locked[1]}`",
        f"• 1 already unlocked (no-op): `{free[0]}`",
        f"• 1 not in the pool (will fail): `{GHOST}`",
    ]
    assert [e.user for e in stack.slack.ephemerals()] == [REQUESTER]
    assert len(stack.simulator.calls_snapshot("list_nodes")) == 1  # the preview read the pool...
    await asyncio.sleep(0.5)
    assert unlock_calls(stack) == []  # ...and nothing else happened: no unlock, no message, no request
    assert stack.slack.calls("chat.postMessage") == [] and stack.slack.calls("chat.update") == []
    assert stack.slack.messages(CHANNEL) == []
    assert await store.audit_events() == []
    assert all(locked_now for locked_now in (stack.simulator.is_locked("pool-prod-a", n) for n in locked))


async def test_changes_since_the_preview_are_reported_in_the_thread(
    stack: LocalStack, driver: SlackDriver, store: Store
) -> None:
    locked = stack.simulator.locked_nodes("pool-prod-a")[:3]
    stays, leaves = locked[0], locked[1]
    message, request_id = await make_request(stack, driver, REQUESTER, f"pool-prod-a {stays} {leaves} {GHOST}")
    assert await store.preview(request_id) == {stays: "locked", leaves: "locked", GHOST: "missing"}

    # Between the preview and the approval: one previewed node leaves the pool, the missing one joins it.
    assert stack.simulator.remove_node("pool-prod-a", leaves)
    stack.simulator.set_node("pool-prod-a", GHOST, locked=True)

    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    await wait_for_state(store, request_id, RequestState.PARTIALLY_FAILED)
    results = {r.node: r.status for r in await store.results(request_id)}
    assert results == {stays: NodeStatus.SUCCESS, leaves: NodeStatus.FAILED, GHOST: NodeStatus.SUCCESS}

    replies = await wait_until(lambda: len(thread_replies(stack, message)) >= 2 and thread_replies(stack, message))
    notes = [message_text(r) for r in replies if "Changed since the preview" in r.text]
    assert len(notes) == 1
    note = notes[0]
    assert f"1 node not in the pool at preview time unlocked anyway: `{GHOST}`" in note
    assert f"1 node in the pool at preview time has left it since: `{leaves}`" in note
    assert stays not in note


async def test_no_change_no_note(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    locked = stack.simulator.locked_nodes("pool-prod-a")[:1]
    free = unlocked_nodes(stack, "pool-prod-a")[:1]
    message, request_id = await make_request(stack, driver, REQUESTER, f"pool-prod-a {locked[0]} {free[0]} {GHOST}")
    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    await wait_for_state(store, request_id, RequestState.PARTIALLY_FAILED)
    replies = await wait_until(lambda: thread_replies(stack, message))
    await asyncio.sleep(0.3)
    assert not any("Changed since the preview" in r.text for r in thread_replies(stack, message))
    assert GHOST in "\n".join(message_text(r) for r in replies)  # the failure itself is in the results


async def test_unreadable_preview_still_creates_the_request(
    stack: LocalStack, driver: SlackDriver, store: Store
) -> None:
    stack.simulator.update_faults(error_rate=1.0, error_statuses=[500], routes=["list_nodes"])
    node = stack.simulator.locked_nodes("pool-prod-a")[0]
    message, request_id = await make_request(stack, driver, REQUESTER, f"pool-prod-a {node}")
    text = message_text(message)
    assert "Preview unavailable" in text and "will be unlocked" not in text
    assert stack.simulator.calls_snapshot("list_nodes") and all(
        c.status == 500 for c in stack.simulator.calls_snapshot("list_nodes")
    )
    request = await store.get_request(request_id)
    assert request is not None and request.state is RequestState.PENDING and request.nodes == (node,)
    assert await store.preview(request_id) == {}

    # It is approved and runs like any other; with no preview there is nothing to compare against.
    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    await wait_for_state(store, request_id, RequestState.SUCCEEDED)
    replies = await wait_until(lambda: thread_replies(stack, message))
    assert not any("Changed since the preview" in r.text for r in replies)
