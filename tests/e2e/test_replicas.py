"""Two `unlock-bot serve` processes on one PostgreSQL: any replica takes any command or click, and a
request is still executed exactly once.

Real processes, real ports, a real database: the only things shared between the replicas are PostgreSQL
and the two outside services (the ModelArts simulator and the Slack stand-in, served from this process).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from bot.requests import NodeStatus, RequestState
from bot.sandbox.driver import SlackDriver
from bot.slack import ids
from bot.store import Store
from tests.e2e.conftest import APPROVER, CHANNEL, LEAD, POLICY, REQUESTER, USERGROUPS
from tests.e2e.helpers import (
    action_ids,
    current,
    ephemeral_texts,
    make_request,
    message_text,
    thread_replies,
    wait_for_state,
    wait_until,
)
from tests.support.databases import postgres_url
from tests.support.replicas import ReplicaSet, fleet_store, postgres_fleet

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(postgres_url() is None, reason="UNLOCK_BOT_TEST_POSTGRES_URL is not set"),
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaSet]:
    """Two replicas, started once for the module (each test works on its own requests and nodes)."""
    with postgres_fleet(
        tmp_path_factory.mktemp("replicas"),
        POLICY,
        replicas=2,
        usergroups=USERGROUPS,
        unlock_bot_sweep_interval_seconds=0.5,
        unlock_bot_usergroup_cache_seconds=60,
    ) as running:
        yield running


@pytest.fixture
async def drivers(fleet: ReplicaSet) -> AsyncIterator[list[SlackDriver]]:
    opened = [fleet.driver(0), fleet.driver(1)]
    try:
        yield opened
    finally:
        for driver in opened:
            await driver.aclose()


@pytest.fixture
async def store(fleet: ReplicaSet) -> AsyncIterator[Store]:
    async with fleet_store(fleet) as opened:
        yield opened


def unlock_calls_for(fleet: ReplicaSet, nodes: list[str]) -> list[object]:
    """The simulator's batch-unlock calls that named any of `nodes`."""
    return [
        call
        for call in fleet.simulator.calls_snapshot("batch_unlock")
        if set((call.json_body or {}).get("nodeNames") or ()) & set(nodes)
    ]


def result_posts(fleet: ReplicaSet, message: object, request_id: str) -> list[object]:
    return [m for m in thread_replies(fleet, message) if f"Results for `{request_id}`" in message_text(m)]


_TAKEN: set[str] = set()  # nodes already used by a test of this module (the fleet is shared)


def take_locked(fleet: ReplicaSet, count: int) -> list[str]:
    """Locked nodes of pool-prod-a that no earlier test of this module used."""
    nodes = [n for n in fleet.simulator.locked_nodes("pool-prod-a") if n not in _TAKEN][:count]
    assert len(nodes) == count
    _TAKEN.update(nodes)
    return nodes


async def test_command_on_one_replica_approval_on_the_other(
    fleet: ReplicaSet, drivers: list[SlackDriver], store: Store
) -> None:
    nodes = take_locked(fleet, 2)
    message, request_id = await make_request(
        fleet, drivers[0], REQUESTER, f"pool-prod-a {' '.join(nodes)} --reason 'INC-7: replicas'"
    )
    created = await store.get_request(request_id)
    assert created is not None and created.state is RequestState.PENDING

    response = await drivers[1].click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    assert response.status_code == 200
    done = await wait_for_state(store, request_id, RequestState.SUCCEEDED, timeout=20)
    assert done.decided_by == APPROVER

    calls = unlock_calls_for(fleet, nodes)
    assert len(calls) == 1, fleet.logs()
    assert calls[0].status == 200 and calls[0].json_body["nodeNames"] == nodes
    assert not any(fleet.simulator.is_locked("pool-prod-a", n) for n in nodes)

    # The replica that received the click is the one that ran it (its PID is in the lease owner).
    executing = [e for e in await store.audit_events(request_id=request_id) if e.event == "executing"]
    assert len(executing) == 1
    assert f":{fleet.replicas[1].pid}:" in executing[0].detail["lease_owner"]

    posts = await wait_until(lambda: result_posts(fleet, message, request_id))
    await asyncio.sleep(0.5)  # a second post would arrive now, if there were one
    assert len(result_posts(fleet, message, request_id)) == 1
    thread = "\n".join(message_text(m) for m in posts)
    assert "2 unlocked, 0 failed, 0 unknown" in thread
    assert all(f"`{node}`" in thread for node in nodes)
    parent = current(fleet, message)
    assert "Succeeded" in message_text(parent) and action_ids(parent) == []
    assert [r.status for r in await store.results(request_id)] == [NodeStatus.SUCCESS] * 2


async def test_twenty_concurrent_approvals_across_replicas_unlock_once(
    fleet: ReplicaSet, drivers: list[SlackDriver], store: Store
) -> None:
    nodes = take_locked(fleet, 3)
    message, request_id = await make_request(fleet, drivers[1], REQUESTER, f"pool-prod-a {' '.join(nodes)}")
    refusals_before = {user: len(ephemeral_texts(fleet, user)) for user in (APPROVER, LEAD)}

    clicks = [
        drivers[i % 2].click((APPROVER, LEAD)[(i // 2) % 2], CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
        for i in range(20)
    ]
    responses = await asyncio.gather(*clicks)
    assert [r.status_code for r in responses] == [200] * 20

    await wait_for_state(store, request_id, RequestState.SUCCEEDED, timeout=20)
    calls = unlock_calls_for(fleet, nodes)
    assert len(calls) == 1, fleet.logs()
    assert calls[0].json_body["nodeNames"] == nodes

    events = [e.event for e in await store.audit_events(request_id=request_id)]
    assert events.count("approved") == 1 and events.count("executing") == 1 and events.count("succeeded") == 1
    assert events.count("node_result") == len(nodes)

    # Every click was handled: one approved, the other 19 were told it already was.
    def refused() -> int:
        return sum(
            1
            for user in (APPROVER, LEAD)
            for text in ephemeral_texts(fleet, user)[refusals_before[user] :]
            if request_id in text
        )

    await wait_until(lambda: refused() >= 19, timeout=15)
    await wait_until(lambda: result_posts(fleet, message, request_id))
    await asyncio.sleep(0.5)
    assert refused() == 19
    assert len(result_posts(fleet, message, request_id)) == 1
    assert len(unlock_calls_for(fleet, nodes)) == 1


async def test_expiry_sweep_runs_on_both_replicas_but_expires_once(
    fleet: ReplicaSet, drivers: list[SlackDriver], store: Store
) -> None:
    node = fleet.simulator.node_names("pool-dev-b")[0]  # pool-dev-* requests live 2 s (conftest policy)
    message, request_id = await make_request(fleet, drivers[0], REQUESTER, f"pool-dev-b {node}")
    await wait_for_state(store, request_id, RequestState.EXPIRED, timeout=10)
    await asyncio.sleep(1.2)  # two more sweeps on each replica: nothing may happen twice

    events = [e.event for e in await store.audit_events(request_id=request_id)]
    assert events == ["created", "expired"]
    updates = [c for c in fleet.slack.calls("chat.update") if c.params.get("ts") == message.ts]
    assert len(updates) == 1
    assert "Expired" in message_text(current(fleet, message)) and action_ids(current(fleet, message)) == []
    assert unlock_calls_for(fleet, [node]) == []
