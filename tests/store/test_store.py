"""The store against real databases: SQLite always, PostgreSQL when UNLOCK_BOT_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import StatementError

from bot.requests import NodeResult, NodeStatus, RequestState, UnlockRequest
from bot.store import AuditEvent, SchemaNotMigrated, Store
from bot.store.schema import head_revision
from bot.store.tables import metadata

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
P, A, E = RequestState.PENDING, RequestState.APPROVED, RequestState.EXECUTING


def make_request(
    request_id: str = "ulk-000000000001",
    *,
    pool: str = "pool-prod-a",
    nodes: tuple[str, ...] = ("node-3", "node-1", "node-2"),
    created_at: datetime = T0,
    ttl: timedelta = timedelta(minutes=15),
    **changes: object,
) -> UnlockRequest:
    return UnlockRequest(
        id=request_id,
        team_id="T0SANDBOX",
        channel_id="C0INCIDENTS",
        requester_id="U0REQUESTER",
        pool=pool,
        nodes=nodes,
        created_at=created_at,
        expires_at=created_at + ttl,
        reason="disk check",
        **changes,  # type: ignore[arg-type]
    )


async def events_of(store: Store, request_id: str) -> list[str]:
    return [e.event for e in await store.audit_events() if e.request_id == request_id]


async def test_create_and_get_round_trip(store: Store) -> None:
    cst = timezone(timedelta(hours=8))
    req = make_request(created_at=T0.astimezone(cst), two_person=False, retry_of=None)
    await store.create_request(req, actor="U0REQUESTER")

    got = await store.get_request(req.id)
    assert got is not None
    assert got.nodes == ("node-3", "node-1", "node-2")  # request order, not sorted
    assert got.created_at == T0 and got.created_at.tzinfo is UTC  # same instant, returned as UTC
    assert got.expires_at == T0 + timedelta(minutes=15) and got.expires_at.tzinfo is UTC
    assert got.updated_at == T0 and got.updated_at is not None and got.updated_at.tzinfo is UTC
    assert (got.state, got.reason, got.two_person, got.pool) == (P, "disk check", False, "pool-prod-a")
    assert (got.decided_by, got.decided_at, got.message_ts, got.detail) == (None, None, None, None)
    assert await store.get_request("ulk-nope") is None

    (event,) = await store.audit_events()
    assert (event.event, event.actor, event.request_id, event.pool) == (
        "created",
        "U0REQUESTER",
        req.id,
        req.pool,
    )
    assert event.at == T0 and event.at.tzinfo is UTC
    assert event.detail["nodes"] == ["node-3", "node-1", "node-2"]

    with pytest.raises(ValueError, match="more than once"):
        await store.create_request(make_request("ulk-dup", nodes=("a", "a")), actor="U0REQUESTER")


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StatementError, match="naive datetime") as caught:
        await store.create_request(make_request(created_at=datetime(2025, 3, 1, 12)), actor="U")
    assert isinstance(caught.value.orig, ValueError)
    assert await store.get_request("ulk-000000000001") is None


async def test_transition_happens_once_and_only_from_the_expected_state(store: Store) -> None:
    req = make_request()
    await store.create_request(req, actor="U0REQUESTER")
    now = T0 + timedelta(minutes=1)

    approved = await store.transition(
        req.id, P, A, actor="U0APPROVER", now=now, decided_by="U0APPROVER", decided_at=now
    )
    assert approved is not None
    assert (approved.state, approved.decided_by, approved.decided_at, approved.updated_at) == (
        A,
        "U0APPROVER",
        now,
        now,
    )
    assert approved.nodes == req.nodes

    # A second click and a wrong expectation both change nothing.
    assert await store.transition(req.id, P, A, actor="U0APPROVER", now=now) is None
    assert await store.transition(req.id, P, RequestState.DENIED, actor="U0APPROVER", now=now) is None
    assert await store.transition("ulk-nope", P, A, actor="U0APPROVER", now=now) is None
    current = await store.get_request(req.id)
    assert current is not None and current.state is A

    # Several expected states: any of them will do.
    cancelled = await store.transition(
        req.id, [P, A], RequestState.CANCELLED, actor="U0REQUESTER", now=now, detail="changed my mind"
    )
    assert cancelled is not None and cancelled.state is RequestState.CANCELLED
    assert cancelled.detail == "changed my mind"

    events = [e for e in await store.audit_events() if e.request_id == req.id]
    assert [(e.event, e.actor) for e in events] == [
        ("created", "U0REQUESTER"),
        ("approved", "U0APPROVER"),
        ("cancelled", "U0REQUESTER"),
    ]
    assert events[1].detail == {"from": "pending", "decided_by": "U0APPROVER", "decided_at": now.isoformat()}
    assert events[2].detail["from"] == ["pending", "approved"]
    assert events[2].detail["detail"] == "changed my mind"

    with pytest.raises(TypeError, match="cannot set nodes"):
        await store.transition(req.id, P, A, actor="U", now=now, nodes=("x",))


async def test_twenty_concurrent_approvals_have_exactly_one_winner(store: Store) -> None:
    req = make_request()
    await store.create_request(req, actor="U0REQUESTER")
    now = T0 + timedelta(seconds=5)

    outcomes = await asyncio.gather(
        *(
            store.transition(req.id, P, A, actor=f"U0APPROVER{i}", now=now, decided_by=f"U0APPROVER{i}")
            for i in range(20)
        )
    )

    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1
    assert await events_of(store, req.id) == ["created", "approved"]
    stored = await store.get_request(req.id)
    assert stored is not None and stored.decided_by == winners[0].decided_by


async def test_concurrent_approvals_across_two_stores_have_exactly_one_winner(store: Store, database_url: str) -> None:
    other = await Store.connect(database_url)  # another replica: its own engine and connections
    try:
        requests = [make_request(f"ulk-00000000000{i}") for i in range(3)]
        for req in requests:
            await store.create_request(req, actor="U0REQUESTER")
        now = T0 + timedelta(seconds=5)
        for req in requests:
            outcomes = await asyncio.gather(
                *((store if i % 2 else other).transition(req.id, P, A, actor=f"U{i}", now=now) for i in range(20))
            )
            assert sum(o is not None for o in outcomes) == 1
            assert await events_of(store, req.id) == ["created", "approved"]
    finally:
        await other.close()


async def test_unexpired_refuses_an_approval_past_the_ttl(store: Store) -> None:
    req = make_request(ttl=timedelta(minutes=15))
    await store.create_request(req, actor="U0REQUESTER")
    late = req.expires_at + timedelta(seconds=1)

    assert await store.transition(req.id, P, A, actor="U0APPROVER", now=late, unexpired=True) is None
    assert await store.transition(req.id, P, A, actor="U0APPROVER", now=req.expires_at, unexpired=True) is None
    stored = await store.get_request(req.id)
    assert stored is not None and stored.state is P

    expired = await store.transition(req.id, P, RequestState.EXPIRED, actor="system", now=late, decided_by="system")
    assert expired is not None and expired.state is RequestState.EXPIRED

    fresh = make_request("ulk-000000000002")
    await store.create_request(fresh, actor="U0REQUESTER")
    in_time = fresh.expires_at - timedelta(seconds=1)
    assert await store.transition(fresh.id, P, A, actor="U0APPROVER", now=in_time, unexpired=True) is not None


async def test_results_are_recorded_per_node_with_audit_events(store: Store) -> None:
    req = make_request(nodes=("node-3", "node-1", "node-2"))
    await store.create_request(req, actor="U0REQUESTER")
    now = T0 + timedelta(minutes=2)

    assert await store.results(req.id) == []
    assert await store.nodes_without_result(req.id) == ["node-3", "node-1", "node-2"]

    await store.record_results(
        req.id,
        [
            NodeResult("node-2", NodeStatus.UNKNOWN, "timed out", "req-b"),
            NodeResult("node-3", NodeStatus.SUCCESS, None, "req-a"),
        ],
        actor="system",
        now=now,
    )
    assert await store.results(req.id) == [
        NodeResult("node-3", NodeStatus.SUCCESS, None, "req-a"),
        NodeResult("node-2", NodeStatus.UNKNOWN, "timed out", "req-b"),
    ]
    assert await store.nodes_without_result(req.id) == ["node-1"]

    # An unknown outcome, resolved later, is overwritten.
    await store.record_results(
        req.id, [NodeResult("node-2", NodeStatus.SUCCESS, None, "req-c")], actor="system", now=now
    )
    assert (await store.results(req.id))[1] == NodeResult("node-2", NodeStatus.SUCCESS, None, "req-c")

    # A node that is not part of the request is refused, and nothing of that batch is kept.
    with pytest.raises(ValueError, match="no node"):
        await store.record_results(
            req.id,
            [NodeResult("node-1", NodeStatus.FAILED, "x", "req-d"), NodeResult("node-9", NodeStatus.FAILED)],
            actor="system",
            now=now,
        )
    assert await store.nodes_without_result(req.id) == ["node-1"]
    with pytest.raises(LookupError):
        await store.record_results("ulk-nope", [NodeResult("node-1", NodeStatus.FAILED)], actor="s", now=now)

    node_events = [e for e in await store.audit_events(pool=req.pool) if e.event == "node_result"]
    assert [(e.detail["node"], e.detail["status"], e.modelarts_request_id) for e in node_events] == [
        ("node-2", "unknown", "req-b"),
        ("node-3", "success", "req-a"),
        ("node-2", "success", "req-c"),
    ]
    assert node_events[0].detail["reason"] == "timed out"
    assert all(e.actor == "system" and e.at == now and e.request_id == req.id for e in node_events)


async def test_due_for_expiry_lists_only_pending_requests_past_their_ttl(store: Store) -> None:
    now = T0 + timedelta(hours=1)
    await store.create_request(make_request("ulk-late-2", ttl=timedelta(minutes=20)), actor="U")
    await store.create_request(make_request("ulk-late-1", ttl=timedelta(minutes=10)), actor="U")
    await store.create_request(make_request("ulk-exact", ttl=timedelta(hours=1)), actor="U")
    await store.create_request(make_request("ulk-future", ttl=timedelta(hours=2)), actor="U")
    await store.create_request(make_request("ulk-approved", ttl=timedelta(minutes=5)), actor="U")
    assert await store.transition("ulk-approved", P, A, actor="U0APPROVER", now=T0) is not None

    due = await store.due_for_expiry(now)
    assert [r.id for r in due] == ["ulk-late-1", "ulk-late-2", "ulk-exact"]
    assert due[0].nodes == ("node-3", "node-1", "node-2")
    assert [r.id for r in await store.due_for_expiry(now, limit=1)] == ["ulk-late-1"]
    assert await store.due_for_expiry(T0) == []


async def test_lease_acquire_renew_takeover_and_release(store: Store) -> None:
    req = make_request()
    await store.create_request(req, actor="U")
    now = T0 + timedelta(minutes=1)
    lease = timedelta(seconds=60)

    assert not await store.acquire_lease(req.id, "replica-a", now + lease, now)  # still pending
    await store.transition(req.id, P, A, actor="U0APPROVER", now=now)
    await store.transition(req.id, A, E, actor="replica-a", now=now)

    assert await store.acquire_lease(req.id, "replica-a", now + lease, now)
    assert await store.acquire_lease(req.id, "replica-a", now + lease, now)  # re-entrant
    assert not await store.acquire_lease(req.id, "replica-b", now + lease, now)
    assert await store.renew_lease(req.id, "replica-a", now + 2 * lease)
    assert not await store.renew_lease(req.id, "replica-b", now + 2 * lease)

    # Replica A stops renewing; once its lease has run out, B takes over and A's renewals fail.
    later = now + 2 * lease
    assert not await store.acquire_lease(req.id, "replica-b", later + lease, later - timedelta(microseconds=1))
    assert await store.acquire_lease(req.id, "replica-b", later + lease, later)
    assert not await store.renew_lease(req.id, "replica-a", later + 2 * lease)

    await store.release_lease(req.id, "replica-a")  # not A's any more: no effect
    assert not await store.acquire_lease(req.id, "replica-c", later + lease, later)
    await store.release_lease(req.id, "replica-b")
    assert await store.acquire_lease(req.id, "replica-c", later + lease, later)

    # Reaching a final state drops the lease.
    done = await store.transition(req.id, E, RequestState.SUCCEEDED, actor="replica-c", now=later)
    assert done is not None
    assert not await store.renew_lease(req.id, "replica-c", later + lease)


async def test_transition_can_take_the_lease(store: Store) -> None:
    req = make_request()
    await store.create_request(req, actor="U")
    await store.transition(req.id, P, A, actor="U0APPROVER", now=T0)
    until = T0 + timedelta(seconds=60)
    assert await store.transition(req.id, A, E, actor="replica-a", now=T0, lease_owner="replica-a", lease_until=until)
    assert not await store.acquire_lease(req.id, "replica-b", until, T0)
    assert await store.renew_lease(req.id, "replica-a", until + timedelta(seconds=60))


async def test_stale_executions(store: Store) -> None:
    grace = timedelta(seconds=60)
    now = T0 + timedelta(minutes=10)
    for name in (
        "dead",
        "alive",
        "unleased-old",
        "unleased-new",
        "approved-old",
        "approved-new",
        "pending-old",
    ):
        await store.create_request(make_request(f"ulk-{name}"), actor="U")
    old, recent = now - timedelta(minutes=5), now - timedelta(seconds=10)
    for name, at in (("dead", old), ("alive", old), ("unleased-old", old), ("unleased-new", recent)):
        await store.transition(f"ulk-{name}", P, A, actor="U0APPROVER", now=at)
        await store.transition(f"ulk-{name}", A, E, actor="replica-a", now=at)
    await store.acquire_lease("ulk-dead", "replica-a", now - timedelta(seconds=1), old)
    await store.acquire_lease("ulk-alive", "replica-a", now + timedelta(seconds=30), old)
    await store.transition("ulk-approved-old", P, A, actor="U0APPROVER", now=old)
    await store.transition("ulk-approved-new", P, A, actor="U0APPROVER", now=recent)

    stale = await store.stale_executions(now, grace=grace)
    assert sorted(r.id for r in stale) == ["ulk-approved-old", "ulk-dead", "ulk-unleased-old"]
    assert all(r.nodes == ("node-3", "node-1", "node-2") for r in stale)
    assert len(await store.stale_executions(now, limit=2, grace=grace)) == 2


async def test_first_delivery_is_true_once(store: Store, database_url: str) -> None:
    assert await store.first_delivery("cmd:T0:abc", T0)
    assert not await store.first_delivery("cmd:T0:abc", T0 + timedelta(seconds=1))
    assert await store.first_delivery("cmd:T0:def", T0)

    other = await Store.connect(database_url)
    try:
        outcomes = await asyncio.gather(
            *((store if i % 2 else other).first_delivery("retry:xyz", T0) for i in range(12))
        )
    finally:
        await other.close()
    assert outcomes.count(True) == 1

    assert await store.prune_deliveries(T0 + timedelta(seconds=1)) == 3
    assert await store.first_delivery("cmd:T0:abc", T0 + timedelta(days=1))


async def test_audit_events_filters_and_custom_events(store: Store) -> None:
    await store.create_request(make_request("ulk-a", pool="pool-a", created_at=T0), actor="U1")
    await store.create_request(make_request("ulk-b", pool="pool-b", created_at=T0 + timedelta(hours=1)), actor="U2")
    await store.audit(
        "modelarts_call",
        request_id="ulk-a",
        actor="system",
        now=T0 + timedelta(hours=2),
        detail={"attempts": 3, "at": T0, "state": RequestState.EXECUTING},
        modelarts_request_id="req-123",
    )
    await store.audit("policy_reloaded", request_id=None, actor="system", now=T0 + timedelta(hours=3))

    everything = await store.audit_events()
    assert [e.event for e in everything] == ["created", "created", "modelarts_call", "policy_reloaded"]
    assert [e.id for e in everything] == sorted(e.id for e in everything)
    custom = everything[2]
    assert isinstance(custom, AuditEvent)
    assert custom.pool == "pool-a"  # copied from the request
    assert custom.detail == {"attempts": 3, "at": T0.isoformat(), "state": "executing"}
    assert custom.modelarts_request_id == "req-123"
    assert everything[3].pool is None and everything[3].detail == {}

    assert [e.request_id for e in await store.audit_events(pool="pool-a")] == ["ulk-a", "ulk-a"]
    since = await store.audit_events(since=T0 + timedelta(hours=1))
    assert [e.event for e in since] == ["created", "modelarts_call", "policy_reloaded"]
    window = await store.audit_events(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=2))
    assert [(e.event, e.request_id) for e in window] == [("created", "ulk-b")]
    # Any timezone works for the bounds.
    cst = timezone(timedelta(hours=8))
    assert len(await store.audit_events(until=(T0 + timedelta(minutes=1)).astimezone(cst))) == 1
    assert await store.audit_events(since=T0, pool="pool-c") == []
    assert [e.event for e in await store.audit_events(request_id="ulk-b")] == ["created"]
    assert len(await store.audit_events(limit=2)) == 2


async def test_prune_audit_deletes_only_older_events(store: Store) -> None:
    for hours in range(5):
        await store.audit("tick", request_id=None, actor="system", now=T0 + timedelta(hours=hours))
    assert await store.prune_audit(T0 + timedelta(hours=2)) == 2
    remaining = await store.audit_events()
    assert [e.at for e in remaining] == [T0 + timedelta(hours=h) for h in (2, 3, 4)]
    assert await store.prune_audit(T0) == 0
    # IDs keep growing after pruning: the trail never reuses one.
    last = remaining[-1].id
    await store.prune_audit(T0 + timedelta(days=1))
    await store.audit("tick", request_id=None, actor="system", now=T0)
    assert (await store.audit_events())[0].id > last


async def test_ensure_schema_on_an_unmigrated_database(database_url: str) -> None:
    store = await Store.connect(database_url)
    try:
        await store.ping()
        assert await store.current_revision() is None
        with pytest.raises(SchemaNotMigrated, match="unlock-bot db upgrade") as caught:
            await store.ensure_schema()
        assert "has no unlock-bot schema" in str(caught.value)
        assert caught.value.head == head_revision()

        await store.upgrade()
        await store.upgrade()  # idempotent
        await store.ensure_schema()
        assert await store.current_revision() == head_revision()
    finally:
        await store.close()


async def test_ensure_schema_names_an_unknown_revision(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(SchemaNotMigrated, match=r"at schema revision 0000.*unlock-bot db upgrade"):
        await store.ensure_schema()


async def test_migration_matches_table_metadata(store: Store) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_sqlite_file_settings(tmp_path: Path) -> None:
    db = tmp_path / "does" / "not" / "exist" / "bot.db"
    store = await Store.connect(f"sqlite:///{db}")  # plain URL: mapped to aiosqlite
    try:
        assert store.dialect == "sqlite"
        await store.upgrade()
        assert db.exists()
        async with store.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() >= 5000
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await store.close()
    with pytest.raises(ValueError, match="in-memory"):
        await Store.connect("sqlite+aiosqlite://")


def test_repr_hides_the_password() -> None:
    async def build() -> str:
        store = await Store.connect("postgresql://bot:hunter2@db.example:5432/bot")
        try:
            return repr(store)
        finally:
            await store.close()

    shown = asyncio.run(build())
    assert "hunter2" not in shown and "postgresql+asyncpg://bot:***@db.example" in shown
