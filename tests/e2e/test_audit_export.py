"""`unlock-bot audit` against what really happened: approvals, a denial, an expiry, a cancellation and a
partial failure, driven through Slack, then exported by the real CLI (a subprocess with DATABASE_URL) as
JSON lines and as CSV, with and without filters, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.audit import COLUMNS, apply_retention
from bot.requests import RequestState
from bot.sandbox.driver import SlackDriver
from bot.sandbox.stack import LocalStack
from bot.slack import ids
from bot.store import Store
from tests.e2e.conftest import APPROVER, CHANNEL, LEAD, REQUESTER
from tests.e2e.helpers import make_request, wait_for_state
from tests.support.databases import database_urls, temporary_database
from tests.support.replicas import base_env, run_cli

SYSTEM = "system"


@dataclass
class Happened:
    """One request of the scenario, as the test made it happen."""

    request_id: str
    pool: str
    nodes: list[str]
    requester: str
    reason: str
    state: RequestState
    decided_by: str
    events: list[str]

    @property
    def approver(self) -> str | None:
        return self.decided_by if self.events[1:2] == ["approved"] else None


async def audit_cli(url: str, *args: str) -> tuple[int, str, str]:
    done = await asyncio.to_thread(run_cli, ["audit", *args], base_env({"DATABASE_URL": url}))
    return done.returncode, done.stdout, done.stderr


def json_rows(out: str) -> list[dict[str, Any]]:
    lines = out.splitlines()
    assert all(line.startswith("{") for line in lines)
    return [json.loads(line) for line in lines]


def parse_utc(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


async def run_scenario(stack: LocalStack, driver: SlackDriver, store: Store) -> tuple[list[Happened], datetime]:
    """Five requests, each ending differently; returns them and a moment between the second and third."""
    prod = stack.simulator.node_names("pool-prod-a")
    dev = stack.simulator.node_names("pool-dev-b")

    async def request(user: str, pool: str, nodes: list[str], reason: str) -> tuple[Any, str]:
        return await make_request(stack, driver, user, f"{pool} {' '.join(nodes)} --reason '{reason}'")

    # A: approved, every node unlocked.
    a_nodes = prod[0:2]
    msg, a = await request(REQUESTER, "pool-prod-a", a_nodes, "INC-1: disk check")
    await driver.click(APPROVER, CHANNEL, msg.ts, ids.APPROVE_ACTION, a)
    await wait_for_state(store, a, RequestState.SUCCEEDED)
    # B: denied.
    msg, b = await request(REQUESTER, "pool-prod-a", prod[2:3], "INC-2: not now")
    await driver.click(LEAD, CHANNEL, msg.ts, ids.DENY_ACTION, b)
    await wait_for_state(store, b, RequestState.DENIED)

    await asyncio.sleep(0.05)
    between = datetime.now(UTC)
    await asyncio.sleep(0.05)

    # C: nobody answers; pool-dev-* requests live 2 s (conftest policy) and the sweep expires it.
    c_nodes = dev[0:1]
    _, c = await request(LEAD, "pool-dev-b", c_nodes, "INC-3: dev box")
    # D: approved, one node refused by ModelArts.
    d_nodes = prod[3:6]
    stack.simulator.update_faults(fail_nodes={d_nodes[1]})
    msg, d = await request(REQUESTER, "pool-prod-a", d_nodes, "INC-4: partial")
    await driver.click(LEAD, CHANNEL, msg.ts, ids.APPROVE_ACTION, d)
    await wait_for_state(store, d, RequestState.PARTIALLY_FAILED)
    stack.simulator.update_faults(fail_nodes=set())
    # E: withdrawn by the requester.
    msg, e = await request(REQUESTER, "pool-prod-a", prod[6:7], "INC-5: never mind")
    await driver.click(REQUESTER, CHANNEL, msg.ts, ids.CANCEL_ACTION, e)
    await wait_for_state(store, e, RequestState.CANCELLED)
    await wait_for_state(store, c, RequestState.EXPIRED, timeout=10)

    ran = ["created", "approved", "executing"]
    return [
        Happened(
            a,
            "pool-prod-a",
            a_nodes,
            REQUESTER,
            "INC-1: disk check",
            RequestState.SUCCEEDED,
            APPROVER,
            [*ran, "node_result", "node_result", "succeeded"],
        ),
        Happened(
            b, "pool-prod-a", prod[2:3], REQUESTER, "INC-2: not now", RequestState.DENIED, LEAD, ["created", "denied"]
        ),
        Happened(
            c, "pool-dev-b", c_nodes, LEAD, "INC-3: dev box", RequestState.EXPIRED, SYSTEM, ["created", "expired"]
        ),
        Happened(
            d,
            "pool-prod-a",
            d_nodes,
            REQUESTER,
            "INC-4: partial",
            RequestState.PARTIALLY_FAILED,
            LEAD,
            [*ran, "node_result", "node_result", "node_result", "partially_failed"],
        ),
        Happened(
            e,
            "pool-prod-a",
            prod[6:7],
            REQUESTER,
            "INC-5: never mind",
            RequestState.CANCELLED,
            REQUESTER,
            ["created", "cancelled"],
        ),
    ], between


def check_rows(rows: list[dict[str, Any]], happened: list[Happened], stack: LocalStack) -> None:
    """Each request's rows say exactly what happened to it."""
    unlock_ids = {
        node: call.request_id
        for call in stack.simulator.calls_snapshot("batch_unlock")
        for node in call.json_body["nodeNames"]
    }
    failed_node = happened[3].nodes[1]
    assert all(list(row) == list(COLUMNS) for row in rows)
    for req in happened:
        mine = [r for r in rows if r["request_id"] == req.request_id]
        assert [r["event"] for r in mine] == req.events, req.request_id
        times = [parse_utc(r["at"]) for r in mine]
        assert times == sorted(times)
        for row in mine:
            assert row["pool"] == req.pool
            assert row["requester_id"] == req.requester
            assert row["reason"] == req.reason
            assert row["approver_id"] == req.approver
            assert row["decided_by"] == req.decided_by
            assert row["request_state"] == req.state.value
            for key, value in row["detail"].items():
                if key.endswith("_at"):
                    parse_utc(value)
        created = mine[0]
        assert created["actor"] == req.requester and created["detail"]["nodes"] == req.nodes
        decision = mine[1]
        assert decision["actor"] == req.decided_by
        nodes = [r for r in mine if r["event"] == "node_result"]
        assert [r["node"] for r in nodes] == (req.nodes if nodes else [])
        for row in nodes:
            assert row["actor"] == SYSTEM
            assert row["modelarts_request_id"] == unlock_ids[row["node"]]
            if row["node"] == failed_node:
                assert row["status"] == "failed" and "failed" in row["node_reason"]
            else:
                assert row["status"] == "success" and row["node_reason"] is None
        for row in mine:
            if row["event"] != "node_result":
                assert row["node"] is None and row["status"] is None and row["node_reason"] is None


async def test_audit_export_matches_what_happened(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    happened, between = await run_scenario(stack, driver, store)
    url = stack.settings.resolved_database_url
    since = between.isoformat().replace("+00:00", "Z")
    until = between.isoformat()  # with an explicit +00:00 offset this time
    (code, out, err), (ccode, cout, cerr), (pcode, pout, _), (scode, sout, _), (ucode, uout, _) = await asyncio.gather(
        audit_cli(url, "--format", "json"),
        audit_cli(url, "--format", "csv"),
        audit_cli(url, "--pool", "pool-dev-b"),
        audit_cli(url, "--since", since, "--format", "json"),
        audit_cli(url, "--until", until),
    )
    assert (code, ccode, pcode, scode, ucode) == (0, 0, 0, 0, 0), err + cerr

    rows = json_rows(out)
    assert {r["request_id"] for r in rows} == {h.request_id for h in happened}
    assert len(rows) == sum(len(h.events) for h in happened)
    check_rows(rows, happened, stack)

    # CSV: the same rows, flattened (empty for none, detail as JSON).
    table = list(csv.DictReader(io.StringIO(cout)))
    assert tuple(csv.reader(io.StringIO(cout)).__next__()) == COLUMNS
    assert len(table) == len(rows)
    for flat, row in zip(table, rows, strict=True):
        assert json.loads(flat.pop("detail")) == row["detail"]
        assert flat == {k: "" if v is None else str(v) for k, v in row.items() if k != "detail"}

    # Filters: by pool, and on either side of a moment between the second and third request.
    assert [r["request_id"] for r in json_rows(pout)] == [happened[2].request_id] * 2
    after = {r["request_id"] for r in json_rows(sout)}
    before = {r["request_id"] for r in json_rows(uout)}
    assert after == {h.request_id for h in happened[2:]}
    assert before == {h.request_id for h in happened[:2]}
    assert all(parse_utc(r["at"]) >= between for r in json_rows(sout))
    assert all(parse_utc(r["at"]) < between for r in json_rows(uout))


@pytest.fixture(params=database_urls())
async def migrated_store(request: pytest.FixtureRequest) -> Any:
    async with temporary_database(request.param) as url:
        store = await Store.connect(url)
        try:
            await store.upgrade()
            yield store
        finally:
            await store.close()


async def test_retention_prunes_only_when_set(migrated_store: Store) -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    for days in (400, 31, 29, 0):
        await migrated_store.audit(f"note-{days}", request_id=None, actor=SYSTEM, now=now - timedelta(days=days))

    # Not set (the default): nothing is ever deleted, however old.
    assert await apply_retention(migrated_store, None, now) == 0
    assert len(await migrated_store.audit_events()) == 4

    # Set: only events older than the window go; the rest of the trail is untouched.
    assert await apply_retention(migrated_store, 30, now) == 2
    assert [e.event for e in await migrated_store.audit_events()] == ["note-29", "note-0"]
    assert await apply_retention(migrated_store, 30, now) == 0
