"""The unlock modal end to end: opened by `/unlock-nodes` alone or the shortcut, pickers fed by ModelArts, submit."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.modelarts.sim_state import SimulatorState
from bot.sandbox.driver import SlackDriver
from bot.sandbox.stack import LocalStack
from bot.slack import ids
from bot.store import Store
from tests.e2e.conftest import APPROVER, CHANNEL, LEAD, OTHER_CHANNEL, POLICY, REQUESTER, STRANGER
from tests.e2e.helpers import (
    action_ids,
    button_value,
    ephemeral_texts,
    make_request,
    message_text,
    top_level_messages,
    unlock_calls,
    wait_until,
)

# pool-stopped-c is for LEAD only: REQUESTER may use the other pools but not this one.
MODAL_POLICY = POLICY + '  - match: "pool-stopped-*"\n    requesters: {users: [U0LEAD]}\n'
SLOW = 4.0  # longer than Slack's 3-second budget for a trigger_id and for an options response


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(MODAL_POLICY)
    return path


# -- helpers ----------------------------------------------------------------------------------------------


async def open_from_command(stack: LocalStack, driver: SlackDriver, user: str = REQUESTER) -> dict[str, Any]:
    """`/unlock-nodes` alone; return the modal as the stand-in holds it."""
    response = await driver.command(user, CHANNEL, "")
    assert response.status_code == 200, response.text
    return await wait_until(lambda: driver.opened_view(user))


def pool_value(pool: str) -> dict[str, Any]:
    """An external select's entry in `view.state.values` once the person chose `pool`."""
    return {"type": "external_select", "selected_option": {"text": {"type": "plain_text", "text": pool}, "value": pool}}


def nodes_value(nodes: list[str]) -> dict[str, Any]:
    return {
        "type": "multi_external_select",
        "selected_options": [{"text": {"type": "plain_text", "text": n}, "value": n} for n in nodes],
    }


def form(
    pool: str | None,
    nodes: list[str],
    reason: str | None = None,
    channel: str | None = None,
    with_channel: bool = False,
) -> dict[str, Any]:
    """`view.state.values` for the modal, with empty fields the way Slack sends them (null / [])."""
    values: dict[str, Any] = {
        ids.POOL_BLOCK: {
            ids.POOL_ACTION: pool_value(pool) if pool else {"type": "external_select", "selected_option": None}
        },
        ids.NODES_BLOCK: {ids.NODES_ACTION: nodes_value(nodes)},
        ids.REASON_BLOCK: {ids.REASON_ACTION: {"type": "plain_text_input", "value": reason}},
    }
    if with_channel:
        values[ids.CHANNEL_BLOCK] = {
            ids.CHANNEL_ACTION: {"type": "conversations_select", "selected_conversation": channel}
        }
    return values


def with_state(view: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    return {**view, "state": {"values": values}}


def option_values(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [option["value"] for option in response.json()["options"]]


def option_labels(response: httpx.Response) -> dict[str, str]:
    return {option["value"]: option["text"]["text"] for option in response.json()["options"]}


async def timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call
    return response, time.monotonic() - started


async def submit_errors(stack: LocalStack, driver: SlackDriver, user: str, view: dict[str, Any], values: Any) -> Any:
    """Submit and return the field errors the bot answered with (the modal stays open, showing them)."""
    response = await driver.submit_view(user, view, values)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response_action"] == "errors", body
    shown = stack.slack.view(view["id"])
    assert shown is not None and not shown.closed and shown.errors == body["errors"]
    return body["errors"]


def expected_nodes(stack: LocalStack, pool: str, query: str) -> list[str]:
    """What the node picker must offer: names containing `query`, locked first, by name, at most 100."""
    locked = set(stack.simulator.locked_nodes(pool))
    names = [n for n in stack.simulator.node_names(pool) if query in n]
    return sorted(names, key=lambda n: (n not in locked, n))[:100]


# -- opening ----------------------------------------------------------------------------------------------


async def test_command_alone_opens_the_modal_while_modelarts_is_slow(stack: LocalStack, driver: SlackDriver) -> None:
    stack.simulator.update_faults(latency_by_route={"list_pools": SLOW, "list_nodes": SLOW})
    response, acked_in = await timed(driver.command(REQUESTER, CHANNEL, ""))
    assert response.status_code == 200 and acked_in < 3.0

    # The stand-in refuses a trigger_id older than 3 s (expired_trigger_id), as Slack does.
    opened = await wait_until(lambda: stack.slack.calls("views.open"), timeout=5)
    assert [(c.error, c.status) for c in opened] == [(None, 200)]
    assert opened[0].params["trigger_id"] == driver.last_trigger_id(REQUESTER)
    view = await driver.opened_view(REQUESTER)
    assert view is not None and view["callback_id"] == ids.MODAL_CALLBACK
    assert json.loads(view["private_metadata"]) == {"channel_id": CHANNEL}
    blocks = {b["block_id"]: b for b in view["blocks"]}
    assert list(blocks) == [ids.POOL_BLOCK, ids.NODES_BLOCK, ids.REASON_BLOCK]  # the channel is the command's
    assert blocks[ids.POOL_BLOCK]["element"]["type"] == "external_select"
    assert blocks[ids.NODES_BLOCK]["element"]["type"] == "multi_external_select"
    assert stack.slack.calls("chat.postMessage") == []

    # Typing into the pool picker while ModelArts takes 4 s: an empty answer inside Slack's 3 s, not an error...
    response, answered_in = await timed(driver.options(REQUESTER, ids.POOL_ACTION, "", view))
    assert option_values(response) == [] and answered_in < 3.0
    # ...and the listing goes on in the background, so a later keystroke gets the pools without waiting again.
    await wait_until(lambda: any(c.route == "list_pools" for c in stack.simulator.calls_snapshot()), timeout=5)
    await asyncio.sleep(0.2)
    response, answered_in = await timed(driver.options(REQUESTER, ids.POOL_ACTION, "pool", view))
    assert "pool-prod-a" in option_values(response) and answered_in < 1.0
    assert len(stack.simulator.calls_snapshot("list_pools")) == 1


async def test_shortcut_opens_the_modal_with_a_channel_picker(
    stack: LocalStack, driver: SlackDriver, store: Store
) -> None:
    response = await driver.shortcut(REQUESTER, ids.SHORTCUT_CALLBACK)
    assert response.status_code == 200
    view = await wait_until(lambda: driver.opened_view(REQUESTER))
    assert view["callback_id"] == ids.MODAL_CALLBACK
    assert view["blocks"][0]["block_id"] == ids.CHANNEL_BLOCK
    assert view["blocks"][0]["element"]["type"] == "conversations_select"
    assert json.loads(view["private_metadata"] or "{}") == {}

    node = stack.simulator.locked_nodes("pool-prod-a")[0]
    errors = await submit_errors(stack, driver, REQUESTER, view, form("pool-prod-a", [node], with_channel=True))
    assert list(errors) == [ids.CHANNEL_BLOCK]
    # A channel the policy does not allow is that field's error, not the pool's.
    errors = await submit_errors(
        stack, driver, REQUESTER, view, form("pool-prod-a", [node], channel=OTHER_CHANNEL, with_channel=True)
    )
    assert list(errors) == [ids.CHANNEL_BLOCK] and CHANNEL in errors[ids.CHANNEL_BLOCK]

    response = await driver.submit_view(
        REQUESTER, view, form("pool-prod-a", [node], "from the shortcut", channel=CHANNEL, with_channel=True)
    )
    assert response.status_code == 200 and not response.content
    message = await wait_until(lambda: top_level_messages(stack) and top_level_messages(stack)[-1])
    request = await store.get_request(button_value(message, ids.APPROVE_ACTION))
    assert request is not None
    assert (request.channel_id, request.pool, request.nodes, request.reason) == (
        CHANNEL,
        "pool-prod-a",
        (node,),
        "from the shortcut",
    )


# -- options ----------------------------------------------------------------------------------------------


async def test_pool_options_are_searched_and_capped(stack: LocalStack, driver: SlackDriver) -> None:
    extra = SimulatorState({"pools": [{"name": f"pool-extra-{i:03d}", "node_count": 1} for i in range(150)]})
    with stack.simulator.lock:
        stack.simulator.pools.update(extra.pools)
    view = await open_from_command(stack, driver)

    everything = option_values(await driver.options(REQUESTER, ids.POOL_ACTION, "", view))
    assert len(everything) == 100  # 154 pools, Slack takes at most 100 per response
    assert everything == sorted(everything)

    response = await driver.options(REQUESTER, ids.POOL_ACTION, "prod", view)
    assert option_values(response) == ["pool-prod-a"]
    assert option_labels(response) == {"pool-prod-a": "prod-a (pool-prod-a)"}
    assert option_values(await driver.options(REQUESTER, ids.POOL_ACTION, " Extra-01", view)) == [
        f"pool-extra-{i:03d}" for i in range(10, 20)
    ]
    assert option_values(await driver.options(REQUESTER, ids.POOL_ACTION, "stopped-c", view)) == ["pool-stopped-c"]
    assert option_values(await driver.options(REQUESTER, ids.POOL_ACTION, "no-such-pool", view)) == []
    assert len(stack.simulator.calls_snapshot("list_pools")) == 1  # keystrokes are served from a short cache


async def test_node_options_for_the_chosen_pool(stack: LocalStack, driver: SlackDriver) -> None:
    view = await open_from_command(stack, driver)
    assert option_values(await driver.options(REQUESTER, ids.NODES_ACTION, "", view)) == []  # no pool chosen yet

    chosen = with_state(view, {ids.POOL_BLOCK: {ids.POOL_ACTION: pool_value("pool-big")}})
    response = await driver.options(REQUESTER, ids.NODES_ACTION, "", chosen)
    # Slack's block_suggestion from a modal carries the view, with what was chosen so far in state.values.
    sent = driver.last_payload
    assert sent is not None and sent["type"] == "block_suggestion" and sent["action_id"] == ids.NODES_ACTION
    assert sent["block_id"] == ids.NODES_BLOCK
    assert sent["container"] == {"type": "view", "view_id": view["id"]}
    assert sent["view"]["id"] == view["id"] and sent["view"]["callback_id"] == ids.MODAL_CALLBACK
    assert sent["view"]["state"]["values"][ids.POOL_BLOCK][ids.POOL_ACTION]["selected_option"]["value"] == "pool-big"

    locked = set(stack.simulator.locked_nodes("pool-big"))
    offered = option_values(response)
    assert offered == expected_nodes(stack, "pool-big", "")
    assert len(offered) == 100 and set(offered) == locked  # 1,200 nodes, the 100 locked ones come first
    labels = option_labels(response)
    assert all(labels[n] == f"🔒 {n} (locked)" for n in offered)

    # "k" is in every locked label ("locked") but only in some names: the search is by name.
    for query in ("k", "7", "os-node-created-"):
        response = await driver.options(REQUESTER, ids.NODES_ACTION, query, chosen)
        offered = option_values(response)
        assert offered == expected_nodes(stack, "pool-big", query)
        assert 0 < len(offered) <= 100 and all(query in n for n in offered)
        marks = [n in locked for n in offered]
        assert marks == sorted(marks, reverse=True)  # every locked node before any unlocked one
        labels = option_labels(response)
        assert all(labels[n] == (f"🔒 {n} (locked)" if n in locked else n) for n in offered)
        if query != "os-node-created-":  # fewer than 100 locked names match: unlocked ones follow
            assert True in marks and False in marks

    small = with_state(view, {ids.POOL_BLOCK: {ids.POOL_ACTION: pool_value("pool-dev-b")}})
    offered = option_values(await driver.options(REQUESTER, ids.NODES_ACTION, "", small))
    assert offered == expected_nodes(stack, "pool-dev-b", "") and len(offered) == 8
    assert len(stack.simulator.calls_snapshot("list_nodes")) == 3 + 1  # pool-big in 3 pages, once; pool-dev-b once


async def test_options_when_modelarts_is_down(stack: LocalStack, driver: SlackDriver) -> None:
    view = await open_from_command(stack, driver)
    chosen = with_state(view, {ids.POOL_BLOCK: {ids.POOL_ACTION: pool_value("pool-prod-a")}})
    stack.simulator.update_faults(error_rate=1.0, error_statuses=[503])
    for action, shown in ((ids.POOL_ACTION, view), (ids.NODES_ACTION, chosen)):
        response, answered_in = await timed(driver.options(REQUESTER, action, "", shown))
        assert option_values(response) == [] and answered_in < 3.0
    assert stack.simulator.calls_snapshot("list_pools") and stack.simulator.calls_snapshot("list_nodes")

    # A failure is not cached: once ModelArts is back, the next keystroke lists again.
    stack.simulator.update_faults(error_rate=0.0)
    assert "pool-prod-a" in option_values(await driver.options(REQUESTER, ids.POOL_ACTION, "", view))

    stack.simulator_server.stop()  # nothing listening at all: connection refused
    response, answered_in = await timed(driver.options(REQUESTER, ids.NODES_ACTION, "", chosen))
    assert option_values(response) == [] and answered_in < 3.0
    acks = stack.slack.acks("block_suggestion")
    assert acks and all(a.effect == "none" and a.status == 200 for a in acks)


# -- submitting -------------------------------------------------------------------------------------------


async def test_submit_creates_the_same_request_as_the_command(
    stack: LocalStack, driver: SlackDriver, store: Store
) -> None:
    nodes = stack.simulator.locked_nodes("pool-prod-a")[:2]
    by_command, command_id = await make_request(
        stack, driver, REQUESTER, f"pool-prod-a {' '.join(nodes)} --reason 'INC-7: stuck'"
    )

    view = await open_from_command(stack, driver)
    response = await driver.submit_view(REQUESTER, view, form("pool-prod-a", nodes, "  INC-7: stuck  "))
    assert response.status_code == 200 and not response.content  # a plain ack closes the modal
    assert stack.slack.view(view["id"]).closed  # type: ignore[union-attr]
    by_modal = await wait_until(lambda: len(top_level_messages(stack)) == 2 and top_level_messages(stack)[-1])
    modal_id = button_value(by_modal, ids.APPROVE_ACTION)
    assert modal_id != command_id

    made = [await store.get_request(request_id) for request_id in (command_id, modal_id)]
    assert made[0] is not None and made[1] is not None
    keys = ("team_id", "channel_id", "requester_id", "pool", "nodes", "reason", "two_person", "state")
    assert [getattr(made[1], k) for k in keys] == [getattr(made[0], k) for k in keys]
    assert made[1].nodes == tuple(nodes) and made[1].reason == "INC-7: stuck"
    assert action_ids(by_modal) == action_ids(by_command) == [ids.APPROVE_ACTION, ids.DENY_ACTION, ids.CANCEL_ACTION]
    # The same message, but for the request ID and the expiry (the two were made a moment apart).
    expiry = re.compile(r"<!date\^\d+\^[^|>]*\|[^>]*>")
    shown = [
        expiry.sub("EXPIRY", message_text(m).replace(i, "ID"))
        for m, i in ((by_modal, modal_id), (by_command, command_id))
    ]
    assert shown[0] == shown[1]
    told = await wait_until(lambda: [t for t in ephemeral_texts(stack, REQUESTER) if modal_id in t])
    assert "waiting for approval" in told[0]
    assert unlock_calls(stack) == []


async def test_field_errors(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    view = await open_from_command(stack, driver)
    node = stack.simulator.locked_nodes("pool-prod-a")[0]

    errors = await submit_errors(stack, driver, REQUESTER, view, form(None, []))
    assert set(errors) == {ids.POOL_BLOCK, ids.NODES_BLOCK}
    errors = await submit_errors(stack, driver, REQUESTER, view, form("pool-prod-a", []))
    assert set(errors) == {ids.NODES_BLOCK}
    errors = await submit_errors(stack, driver, REQUESTER, view, form(None, [node]))
    assert set(errors) == {ids.POOL_BLOCK}

    errors = await submit_errors(stack, driver, STRANGER, view, form("pool-prod-a", [node]))
    assert set(errors) == {ids.POOL_BLOCK} and "not a requester" in errors[ids.POOL_BLOCK]
    stopped = stack.simulator.node_names("pool-stopped-c")[0]
    errors = await submit_errors(stack, driver, REQUESTER, view, form("pool-stopped-c", [stopped]))
    assert set(errors) == {ids.POOL_BLOCK}
    assert "pool-stopped-c" in errors[ids.POOL_BLOCK] and "U0LEAD" in errors[ids.POOL_BLOCK]

    too_many = stack.simulator.node_names("pool-big")[:601]
    errors = await submit_errors(stack, driver, REQUESTER, view, form("pool-big", too_many))
    assert set(errors) == {ids.NODES_BLOCK}
    assert "601" in errors[ids.NODES_BLOCK] and "600" in errors[ids.NODES_BLOCK]
    assert "`" not in errors[ids.NODES_BLOCK]  # plain text under a field: no mrkdwn markup

    errors = await submit_errors(stack, driver, REQUESTER, view, form("pool-prod-a", [node, "Bad_Name"]))
    assert set(errors) == {ids.NODES_BLOCK} and "Bad_Name" in errors[ids.NODES_BLOCK]

    assert all(len(message) <= 2000 for message in errors.values())
    await asyncio.sleep(0.3)
    assert stack.slack.calls("chat.postMessage") == [] and stack.slack.calls("chat.postEphemeral") == []
    assert await store.audit_events() == []

    # The same modal, corrected, goes through (LEAD may use pool-stopped-c).
    response = await driver.submit_view(LEAD, view, form("pool-stopped-c", [stopped]))
    assert response.status_code == 200 and not response.content
    message = await wait_until(lambda: top_level_messages(stack) and top_level_messages(stack)[-1])
    assert "pool-stopped-c" in message_text(message)
    assert APPROVER not in message_text(message)
