"""The Slack workflow end to end: command → policy → approval in the channel → batch-unlock → thread."""

from __future__ import annotations

import asyncio
import json
import time

from bot.requests import NodeStatus, RequestState
from bot.sandbox.driver import SlackDriver
from bot.sandbox.stack import LocalStack
from bot.slack import ids
from bot.store import Store
from tests.e2e.conftest import APPROVER, CHANNEL, LEAD, OTHER_CHANNEL, REQUESTER, STRANGER
from tests.e2e.helpers import (
    action_ids,
    current,
    ephemeral_texts,
    make_request,
    message_text,
    thread_replies,
    top_level_messages,
    unlock_calls,
    wait_for_state,
    wait_until,
)


def locked_nodes(stack: LocalStack, pool: str, count: int) -> list[str]:
    nodes = stack.simulator.locked_nodes(pool)[:count]
    assert len(nodes) == count
    return nodes


async def test_happy_path(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    nodes = locked_nodes(stack, "pool-prod-a", 3)
    started = time.monotonic()
    response = await driver.command(REQUESTER, CHANNEL, f"pool-prod-a {' '.join(nodes)} --reason 'INC-1: stuck'")
    acked_in = time.monotonic() - started
    assert response.status_code == 200
    assert acked_in < 3.0

    message = await wait_until(lambda: top_level_messages(stack) and top_level_messages(stack)[-1])
    assert action_ids(message) == [ids.APPROVE_ACTION, ids.DENY_ACTION, ids.CANCEL_ACTION]
    text = message_text(message)
    assert f"<@{REQUESTER}>" in text and "pool-prod-a" in text and "INC-1: stuck" in text
    assert all(node in text for node in nodes)
    assert "3 will be unlocked" in text or "3 :unlock: will be unlocked" in text
    request_id = next(
        e["value"] for b in message.blocks for e in b.get("elements", []) if e.get("action_id") == ids.APPROVE_ACTION
    )
    assert unlock_calls(stack) == []

    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    done = await wait_for_state(store, request_id, RequestState.SUCCEEDED)
    assert done.decided_by == APPROVER

    calls = unlock_calls(stack)
    assert len(calls) == 1
    assert calls[0].status == 200 and calls[0].ak_or_token_kind == "aksk"
    assert calls[0].json_body == {"nodeNames": nodes, "actions": ["delete"]}
    assert not any(stack.simulator.is_locked("pool-prod-a", n) for n in nodes)

    replies = await wait_until(lambda: thread_replies(stack, message))
    thread = "\n".join(message_text(m) for m in replies)
    assert "3 unlocked, 0 failed, 0 unknown" in thread
    assert all(thread.count(f"`{node}`") == 1 for node in nodes)
    parent = current(stack, message)
    assert "Succeeded" in message_text(parent) and f"<@{APPROVER}>" in message_text(parent)
    assert action_ids(parent) == []  # no more Approve/Deny once final

    events = [e.event for e in await store.audit_events() if e.request_id == request_id]
    assert events[:4] == ["created", "approved", "executing", "node_result"]
    assert events[-1] == "succeeded"


async def test_bad_signature_and_stale_timestamp_are_rejected(stack: LocalStack, driver: SlackDriver) -> None:
    body = b"command=%2Funlock-nodes&text=pool-prod-a+os-node-created-xzz78&user_id=U0REQUESTER&channel_id=C0INCIDENTS"
    forged = driver.sign(body)
    forged["X-Slack-Signature"] = "v0=" + "0" * 64
    response = await driver.send_raw(body, forged)
    assert response.status_code == 401

    stale = driver.sign(body, timestamp=int(time.time()) - 6 * 60)
    response = await driver.send_raw(body, stale)
    assert response.status_code == 401

    await asyncio.sleep(0.3)
    assert stack.slack.calls("chat.postMessage") == []
    assert stack.simulator.calls_snapshot() == []


async def refused_command(stack: LocalStack, driver: SlackDriver, user: str, channel: str, text: str) -> str:
    """Send a command that must be refused; return what the user was told (ack or response_url)."""
    response = await driver.command(user, channel, text)
    assert response.status_code == 200
    told = await wait_until(lambda: ephemeral_texts(stack, user), timeout=10)
    assert stack.slack.calls("chat.postMessage") == []
    assert unlock_calls(stack) == []
    return "\n".join(told)


async def test_caller_not_allowed(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    told = await refused_command(stack, driver, STRANGER, CHANNEL, "pool-prod-a os-node-created-xzz78")
    assert "not" in told and "requester" in told
    assert await store.audit_events() == []


async def test_channel_not_allowed(stack: LocalStack, driver: SlackDriver) -> None:
    told = await refused_command(stack, driver, REQUESTER, OTHER_CHANNEL, "pool-prod-a os-node-created-xzz78")
    assert OTHER_CHANNEL in told or "channel" in told


async def test_too_many_nodes(stack: LocalStack, driver: SlackDriver) -> None:
    nodes = " ".join(f"n{i}" for i in range(601))
    told = await refused_command(stack, driver, REQUESTER, CHANNEL, f"pool-big {nodes}")
    assert "601" in told and "600" in told


async def test_malformed_names(stack: LocalStack, driver: SlackDriver) -> None:
    told = await refused_command(stack, driver, REQUESTER, CHANNEL, "pool-prod-a Os-Node_1 ok-node")
    assert "Os-Node_1" in told and "/unlock-nodes" in told  # names the bad one and shows the usage


async def test_unknown_pool_is_refused_at_request_time(stack: LocalStack, driver: SlackDriver) -> None:
    told = await refused_command(stack, driver, REQUESTER, CHANNEL, "pool-nope os-node-created-xzz78")
    assert "pool-nope" in told and "not found" in told


async def test_duplicates_are_dropped_and_said(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    node = locked_nodes(stack, "pool-prod-a", 1)[0]
    _, request_id = await make_request(stack, driver, REQUESTER, f"pool-prod-a {node},{node} {node}")
    request = await store.get_request(request_id)
    assert request is not None and request.nodes == (node,)
    await wait_until(lambda: any("2 duplicate node names dropped" in t for t in ephemeral_texts(stack, REQUESTER)))


async def test_self_approval_refused_under_two_person(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    node = locked_nodes(stack, "pool-prod-a", 1)[0]
    message, request_id = await make_request(stack, driver, LEAD, f"pool-prod-a {node}")
    await driver.click(LEAD, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    # LEAD was already told the request is waiting: wait for the refusal itself.
    await wait_until(lambda: any("two-person" in t for t in ephemeral_texts(stack, LEAD)))
    request = await store.get_request(request_id)
    assert request is not None and request.state is RequestState.PENDING
    assert unlock_calls(stack) == []


async def test_non_approver_click_refused(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    node = locked_nodes(stack, "pool-prod-a", 1)[0]
    message, request_id = await make_request(stack, driver, REQUESTER, f"pool-prod-a {node}")
    for action in (ids.APPROVE_ACTION, ids.DENY_ACTION):
        await driver.click(STRANGER, CHANNEL, message.ts, action, request_id)
    told = await wait_until(lambda: len(ephemeral_texts(stack, STRANGER)) >= 2 and ephemeral_texts(stack, STRANGER))
    assert all("approver" in t for t in told)
    await driver.click(APPROVER, CHANNEL, message.ts, ids.CANCEL_ACTION, request_id)
    told = await wait_until(lambda: ephemeral_texts(stack, APPROVER))
    assert any("requester" in t for t in told)
    request = await store.get_request(request_id)
    assert request is not None and request.state is RequestState.PENDING
    assert unlock_calls(stack) == []


async def test_expired_request_cannot_be_approved(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    # pool-dev-* requests live 2 seconds in the test policy; the sweep expires them without a click.
    node = locked_nodes(stack, "pool-dev-b", 1)[0]
    message, request_id = await make_request(stack, driver, REQUESTER, f"pool-dev-b {node}")
    await wait_for_state(store, request_id, RequestState.EXPIRED, timeout=10)
    parent = await wait_until(lambda: "Expired" in message_text(current(stack, message)) and current(stack, message))
    assert action_ids(parent) == []

    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    told = await wait_until(lambda: ephemeral_texts(stack, APPROVER))
    assert any("expired" in t for t in told)
    assert unlock_calls(stack) == []


async def test_deny_and_cancel(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    node = locked_nodes(stack, "pool-prod-a", 1)[0]
    denied_msg, denied_id = await make_request(stack, driver, REQUESTER, f"pool-prod-a {node}")
    await driver.click(APPROVER, CHANNEL, denied_msg.ts, ids.DENY_ACTION, denied_id)
    await wait_for_state(store, denied_id, RequestState.DENIED)
    await wait_until(lambda: "Denied" in message_text(current(stack, denied_msg)))

    cancelled_msg, cancelled_id = await make_request(stack, driver, REQUESTER, f"pool-prod-a {node}")
    await driver.click(REQUESTER, CHANNEL, cancelled_msg.ts, ids.CANCEL_ACTION, cancelled_id)
    await wait_for_state(store, cancelled_id, RequestState.CANCELLED)
    await wait_until(lambda: "Cancelled" in message_text(current(stack, cancelled_msg)))
    assert unlock_calls(stack) == []


async def test_concurrent_clicks_and_redelivery_unlock_once(
    stack: LocalStack, driver: SlackDriver, store: Store
) -> None:
    nodes = locked_nodes(stack, "pool-prod-a", 2)
    message, request_id = await make_request(stack, driver, REQUESTER, f"pool-prod-a {' '.join(nodes)}")
    stack.simulator.update_faults(latency_by_route={"batch_unlock": 0.3})
    await asyncio.gather(
        driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id),
        driver.click(LEAD, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id),
    )
    await driver.redeliver()  # the same click delivered again, byte for byte
    await wait_for_state(store, request_id, RequestState.SUCCEEDED)
    await asyncio.sleep(0.5)
    assert len(unlock_calls(stack)) == 1
    results_posts = [m for m in thread_replies(stack, message) if "Results for" in message_text(m)]
    assert len(results_posts) == 1


async def test_partial_failure_and_retry(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    nodes = stack.simulator.node_names("pool-big")[:500]
    failing = set(nodes[10:17])
    stack.simulator.update_faults(fail_nodes=failing)
    message, request_id = await make_request(stack, driver, REQUESTER, "pool-big " + ",".join(nodes))
    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    await wait_for_state(store, request_id, RequestState.PARTIALLY_FAILED, timeout=30)

    results = await store.results(request_id)
    assert sum(r.status is NodeStatus.SUCCESS for r in results) == 493
    assert {r.node for r in results if r.status is NodeStatus.FAILED} == failing

    replies = await wait_until(lambda: thread_replies(stack, message))
    thread = "\n".join(message_text(m) for m in replies)
    assert "493 unlocked, 7 failed, 0 unknown" in thread
    for node in nodes:
        assert thread.count(f"`{node}`") == 1, node
    for reply in replies:
        assert len(reply.blocks) <= 50
        assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in reply.blocks)

    parent = await wait_until(
        lambda: ids.RETRY_FAILED_ACTION in action_ids(current(stack, message)) and current(stack, message)
    )
    assert "Partially failed" in message_text(parent)
    before = len(top_level_messages(stack))
    await driver.click(REQUESTER, CHANNEL, parent.ts, ids.RETRY_FAILED_ACTION, request_id)
    retry_msg = await wait_until(lambda: len(top_level_messages(stack)) > before and top_level_messages(stack)[-1])
    retry_id = next(
        e["value"] for b in retry_msg.blocks for e in b.get("elements", []) if e.get("action_id") == ids.APPROVE_ACTION
    )
    retry = await store.get_request(retry_id)
    assert retry is not None
    assert set(retry.nodes) == failing and len(retry.nodes) == 7
    assert retry.retry_of == request_id and retry.state is RequestState.PENDING


async def failed_execution(stack: LocalStack, driver: SlackDriver, store: Store, **faults: object) -> str:
    node = locked_nodes(stack, "pool-prod-a", 1)[0]
    message, request_id = await make_request(stack, driver, REQUESTER, f"pool-prod-a {node}")
    stack.simulator.update_faults(routes=["batch_unlock", "get_node", "list_nodes"], **faults)
    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    failed = await wait_for_state(store, request_id, RequestState.FAILED, timeout=30)
    assert failed.detail
    replies = await wait_until(lambda: thread_replies(stack, message))
    await wait_until(lambda: "Failed" in message_text(current(stack, message)))
    return "\n".join(message_text(m) for m in replies)


async def test_pool_not_found_at_execution(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    thread = await failed_execution(stack, driver, store, fail_next=[404])
    assert "pool not found" in thread and "ModelArts.50015001" in thread
    request_id = unlock_calls(stack)[0].request_id
    assert request_id and request_id in thread


async def test_authentication_failure(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    thread = await failed_execution(stack, driver, store, fail_next=[401])
    assert "APIGW.0301" in thread
    assert len(unlock_calls(stack)) == 1  # a 401 is never retried
    assert unlock_calls(stack)[0].request_id in thread


async def test_modelarts_outage(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    thread = await failed_execution(stack, driver, store, error_rate=1.0, error_statuses=[503])
    assert "503" in thread or "unavailable" in thread
    assert 1 < len(unlock_calls(stack)) <= 3  # retried, but within the configured attempts


async def test_help_shows_usage_and_permissions(stack: LocalStack, driver: SlackDriver) -> None:
    await driver.command(APPROVER, CHANNEL, "help")
    told = "\n".join(await wait_until(lambda: ephemeral_texts(stack, APPROVER)))
    assert "/unlock-nodes" in told and "approve" in told.lower()


async def test_dry_run_creates_nothing(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    locked = locked_nodes(stack, "pool-prod-a", 1)[0]
    unlocked = next(
        n for n in stack.simulator.node_names("pool-prod-a") if not stack.simulator.is_locked("pool-prod-a", n)
    )
    await driver.command(REQUESTER, CHANNEL, f"pool-prod-a {locked} {unlocked} not-a-node --dry-run")
    told = "\n".join(await wait_until(lambda: ephemeral_texts(stack, REQUESTER)))
    assert "Dry run" in told
    assert f"1 will be unlocked: `{locked}`" in told
    assert f"1 already unlocked (no-op): `{unlocked}`" in told
    assert "1 not in the pool (will fail): `not-a-node`" in told
    assert stack.slack.calls("chat.postMessage") == []
    assert unlock_calls(stack) == []
    assert await store.audit_events() == []
    _ = json  # keep the import for readers of payloads in failures
