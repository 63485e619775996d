"""Crash recovery across replicas: the replica running a request is SIGKILLed mid-unlock; the other one
takes the request over once the lease has run out, and finishes it without unlocking any node twice.

The hard part is the unlock call the dead replica had already sent: the simulator keeps serving it after
the client is gone (as a real gateway would), so it lands *after* the survivor has taken the lease over.
The test checks that this really happened in the run (the takeover is earlier than the dead call's
answer) and that, all the same, every node appears in at most one successful batch-unlock call.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest

from bot.requests import NodeStatus, RequestState
from bot.sandbox.driver import SlackDriver
from bot.slack import ids
from bot.store import Store
from tests.e2e.conftest import APPROVER, CHANNEL, POLICY, REQUESTER, USERGROUPS
from tests.e2e.helpers import current, make_request, message_text, thread_replies, wait_for_state, wait_until
from tests.support.databases import postgres_url
from tests.support.replicas import ReplicaSet, fleet_store, postgres_fleet

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(postgres_url() is None, reason="UNLOCK_BOT_TEST_POSTGRES_URL is not set"),
]

UNLOCK_LATENCY = 3.5  # the simulator sits on every batch-unlock this long before applying it
LEASE = 2.0
HTTP_TIMEOUT = 4.5  # > UNLOCK_LATENCY, so the survivor's own (equally slow) call succeeds


@pytest.fixture
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaSet]:
    with postgres_fleet(
        tmp_path_factory.mktemp("recovery"),
        POLICY,
        replicas=2,
        usergroups=USERGROUPS,
        unlock_bot_lease_seconds=LEASE,
        unlock_bot_sweep_interval_seconds=0.25,
        unlock_bot_http_timeout_seconds=HTTP_TIMEOUT,
        # Two nodes per call, one call at a time: the dead replica gets one call out, the second chunk is
        # never sent (with more than one at a time, a client that has just had a successful call sends
        # its first wave at once: bot/modelarts/client.py).
        unlock_bot_chunk_size=2,
        unlock_bot_concurrency=1,
        unlock_bot_max_attempts=1,
    ) as running:
        yield running


@pytest.fixture
async def store(fleet: ReplicaSet) -> AsyncIterator[Store]:
    async with fleet_store(fleet) as opened:
        yield opened


async def test_killed_replica_is_resumed_without_unlocking_twice(fleet: ReplicaSet, store: Store) -> None:
    nodes = fleet.simulator.locked_nodes("pool-prod-a")[:4]
    assert len(nodes) == 4
    victim, survivor = fleet.replicas
    async with SlackDriver(victim.url, fleet.signing_secret, fleet.slack_server.url) as slack:
        message, request_id = await make_request(fleet, slack, REQUESTER, f"pool-prod-a {' '.join(nodes)}")
        fleet.simulator.update_faults(latency_by_route={"batch_unlock": UNLOCK_LATENCY})
        response = await slack.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
        assert response.status_code == 200

    # The victim (which got the click) has sent its first batch-unlock; the simulator is sitting on it.
    await wait_until(lambda: fleet.watch.count("/batch-unlock") >= 1, timeout=10)
    fleet.kill(victim.index)
    assert victim.process.returncode == -9
    running = await store.get_request(request_id)
    assert running is not None and running.state is RequestState.EXECUTING
    assert await store.results(request_id) == []  # nothing recorded yet: the call has not answered

    done = await wait_for_state(store, request_id, RequestState.SUCCEEDED, timeout=25)

    # Every node ended with a result, and ModelArts agrees.
    results = await store.results(request_id)
    assert [r.node for r in results] == nodes
    assert all(r.status is NodeStatus.SUCCESS for r in results), results
    assert not any(fleet.simulator.is_locked("pool-prod-a", n) for n in nodes)

    # No node unlocked twice: each appears in at most one batch-unlock that ModelArts applied (200).
    calls = fleet.simulator.calls_snapshot("batch_unlock")
    applied = [c for c in calls if c.status == 200]
    per_node = Counter(n for c in applied for n in c.json_body["nodeNames"])
    assert per_node == Counter(nodes), f"calls: {[(c.json_body, c.status) for c in calls]}\n{fleet.logs()}"

    # ... and the hazard was real in this run: the dead replica's call (the first two nodes) was applied
    # after the survivor had already taken the request over.
    events = await store.audit_events(request_id=request_id)
    (executing,) = [e for e in events if e.event == "executing"]
    (resumed,) = [e for e in events if e.event == "resumed"]
    assert f":{victim.pid}:" in executing.detail["lease_owner"]
    assert f":{survivor.pid}:" in resumed.detail["lease_owner"]
    assert resumed.at >= executing.at + timedelta(seconds=LEASE), "taken over before the lease ran out"
    dead_call = next(c for c in applied if c.json_body["nodeNames"] == nodes[:2])
    assert resumed.at < dead_call.at, "the dead replica's call landed before the takeover: nothing was at stake"
    # The first two were settled by reading their lock state, the other two by the survivor's own call.
    by_node = {r.node: r for r in results}
    assert all("re-reading" in (by_node[n].reason or "") for n in nodes[:2])
    survivor_call = next(c for c in applied if c.json_body["nodeNames"] == nodes[2:])
    assert all(by_node[n].request_id == survivor_call.request_id for n in nodes[2:])

    # The audit trail: one result per node, one final state, in order.
    kinds = [e.event for e in events]
    assert kinds[:3] == ["created", "approved", "executing"]
    assert kinds.count("node_result") == 4 and kinds[-1] == "succeeded" and kinds.count("succeeded") == 1
    assert done.decided_by == APPROVER

    # The thread: results once, saying the request was resumed; the message shows the final state.
    def posts() -> list[object]:
        return [m for m in thread_replies(fleet, message) if f"Results for `{request_id}`" in message_text(m)]

    found = await wait_until(posts, timeout=10)
    await asyncio.sleep(0.5)
    assert len(posts()) == 1
    summary = message_text(found[0])
    assert "resumed" in summary and "4 unlocked, 0 failed, 0 unknown" in summary
    assert "Succeeded" in message_text(current(fleet, message))
    assert survivor.alive()
