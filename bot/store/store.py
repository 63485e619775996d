"""The store: requests, their per-node results, the audit trail and Slack delivery dedupe.

Every change of a request's state is one compare-and-set `UPDATE … WHERE id = ? AND state IN (…)`, with its
audit event written in the same transaction: a double click, a Slack retry or a second replica changes
nothing twice, and nothing changes without a trace. Transactions always start with their write, so SQLite
writers queue on the busy timeout rather than fail on a lock upgrade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from types import TracebackType
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, delete, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.requests import NodeResult, NodeStatus, RequestState, UnlockRequest
from bot.store import schema
from bot.store.engine import make_engine, safe_url
from bot.store.tables import UTCDateTime, audit_events, request_nodes, requests, slack_deliveries

# Columns a transition may set besides state, detail and the lease (anything else is a programming error).
TRANSITION_FIELDS = frozenset({"decided_by", "decided_at", "message_ts", "expires_at"})

# Held while migrating so two replicas starting together do not both create the tables (PostgreSQL only).
_MIGRATION_LOCK_KEY = 0x756E6C6F636B  # "unlock"

# Keys (delivery keys, node names) per statement at most: far below any driver's limit on bound parameters.
_KEYS_PER_STATEMENT = 500


@dataclass(frozen=True)
class AuditEvent:
    """One line of the audit trail: who did what to which request, when, and ModelArts' request ID."""

    id: int
    at: datetime
    request_id: str | None
    pool: str | None
    event: str
    actor: str
    detail: dict[str, Any] = field(default_factory=dict)
    modelarts_request_id: str | None = None


class Store:
    """Durable state on SQLite or PostgreSQL; safe to share between tasks and between processes."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # first_delivery's group commit: keys waiting for the next INSERT, and the task writing them.
        self._deliveries: dict[str, list[tuple[datetime, asyncio.Future[bool]]]] = {}
        self._delivery_writer: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str) -> Store:
        """A store for `url` (plain `sqlite:///…` and `postgresql://…` map to the async drivers).

        Connections are opened lazily; call `ensure_schema()` (or `upgrade()`) before use.
        """
        return cls(make_engine(url))

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({safe_url(self._engine.url)!r})"

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- schema and connectivity ---------------------------------------------------------------------------

    async def upgrade(self, revision: str = "head") -> None:
        """Run the packaged Alembic migrations up to `revision` (`unlock-bot db upgrade`)."""
        async with self._engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            await conn.run_sync(schema.upgrade, revision)

    async def current_revision(self) -> str | None:
        """The schema revision the database is at; None when never migrated."""
        async with self._engine.connect() as conn:
            return await conn.run_sync(schema.current_revision)

    async def ensure_schema(self) -> None:
        """Raise `SchemaNotMigrated` unless the database is at the revision this code was written for."""
        current = await self.current_revision()
        head = schema.head_revision()
        if current != head:
            raise schema.SchemaNotMigrated(current, head)

    async def ping(self) -> None:
        """Raise if the database cannot be reached (for /readyz)."""
        async with self._engine.connect() as conn:
            await conn.execute(select(1))

    async def close(self) -> None:
        await self._engine.dispose()

    # -- requests ------------------------------------------------------------------------------------------

    async def create_request(self, req: UnlockRequest, *, actor: str) -> None:
        """Store a new request with its nodes in order, and its `created` audit event, in one transaction."""
        if len(set(req.nodes)) != len(req.nodes):
            raise ValueError(f"request {req.id} names a node more than once")
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(requests).values(
                    id=req.id,
                    team_id=req.team_id,
                    channel_id=req.channel_id,
                    requester_id=req.requester_id,
                    pool=req.pool,
                    state=req.state.value,
                    reason=req.reason,
                    two_person=req.two_person,
                    decided_by=req.decided_by,
                    decided_at=req.decided_at,
                    message_ts=req.message_ts,
                    retry_of=req.retry_of,
                    detail=req.detail,
                    created_at=req.created_at,
                    updated_at=req.updated_at or req.created_at,
                    expires_at=req.expires_at,
                )
            )
            if req.nodes:
                await conn.execute(
                    insert(request_nodes),
                    [{"request_id": req.id, "position": i, "node": n} for i, n in enumerate(req.nodes)],
                )
            detail: dict[str, Any] = {
                "state": req.state.value,
                "requester_id": req.requester_id,
                "channel_id": req.channel_id,
                "nodes": list(req.nodes),
                "reason": req.reason,
                "two_person": req.two_person,
                "expires_at": req.expires_at.isoformat(),
            }
            if req.retry_of is not None:
                detail["retry_of"] = req.retry_of
            await _insert_audit(
                conn,
                "created",
                request_id=req.id,
                pool=req.pool,
                actor=actor,
                at=req.created_at,
                detail=detail,
            )

    async def get_request(self, request_id: str) -> UnlockRequest | None:
        async with self._engine.connect() as conn:
            found = await _load_requests(conn, [request_id])
        return found[0] if found else None

    async def get_requests(self, request_ids: Iterable[str], *, batch: int = 500) -> dict[str, UnlockRequest]:
        """Several requests by ID (unknown IDs left out), a few queries rather than one per request."""
        wanted = list(dict.fromkeys(request_ids))
        found: dict[str, UnlockRequest] = {}
        async with self._engine.connect() as conn:
            for start in range(0, len(wanted), batch):
                for request in await _load_requests(conn, wanted[start : start + batch]):
                    found[request.id] = request
        return found

    async def transition(
        self,
        request_id: str,
        expected: RequestState | Iterable[RequestState],
        new: RequestState,
        *,
        actor: str,
        now: datetime,
        unexpired: bool = False,
        detail: str | None = None,
        lease_owner: str | None = None,
        lease_until: datetime | None = None,
        **fields: Any,
    ) -> UnlockRequest | None:
        """Move the request from one of `expected` to `new`, only if it is still there; None if it was not.

        One `UPDATE … WHERE id = ? AND state IN (…) [AND expires_at > now]`; the winner's audit event (named
        after the new state) is written in the same transaction. `unexpired` refuses a request past its TTL.
        `detail` sets the request's `detail` (why it ended so) and is copied to the event. `fields` may set
        `decided_by`, `decided_at`, `message_ts`, `expires_at`. Reaching a final state drops the lease.
        """
        unknown = set(fields) - TRANSITION_FIELDS
        if unknown:
            raise TypeError(f"transition() cannot set {', '.join(sorted(unknown))}")
        states = [expected] if isinstance(expected, RequestState) else list(expected)
        if not states:
            raise ValueError("transition() needs at least one expected state")
        values: dict[str, Any] = {"state": new.value, "updated_at": now, **fields}
        if detail is not None:
            values["detail"] = detail
        if lease_owner is not None or lease_until is not None:
            values["lease_owner"] = lease_owner
            values["lease_until"] = lease_until
        elif new.is_final:
            values["lease_owner"] = None
            values["lease_until"] = None
        where = [requests.c.id == request_id, requests.c.state.in_([s.value for s in states])]
        if unexpired:
            where.append(requests.c.expires_at > now)

        async with self._engine.begin() as conn:
            result = await conn.execute(update(requests).where(*where).values(values))
            if result.rowcount != 1:
                return None
            (row,) = await _load_requests(conn, [request_id])
            event_detail: dict[str, Any] = {"from": states[0].value if len(states) == 1 else [s.value for s in states]}
            event_detail.update({k: _jsonable(v) for k, v in fields.items()})
            if detail is not None:
                event_detail["detail"] = detail
            if lease_owner is not None:
                event_detail["lease_owner"] = lease_owner
            await _insert_audit(
                conn,
                new.value,
                request_id=request_id,
                pool=row.pool,
                actor=actor,
                at=now,
                detail=event_detail,
            )
        return row

    async def set_preview(self, request_id: str, states: Mapping[str, str]) -> None:
        """Keep what the preview read for each node, so execution can say what changed since."""
        async with self._engine.begin() as conn:
            for node, state in states.items():
                await conn.execute(
                    update(request_nodes)
                    .where(request_nodes.c.request_id == request_id, request_nodes.c.node == node)
                    .values(preview=state)
                )

    async def preview(self, request_id: str) -> dict[str, str]:
        """Each node's previewed lock state (nodes without one are left out)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(request_nodes.c.node, request_nodes.c.preview).where(
                    request_nodes.c.request_id == request_id, request_nodes.c.preview.is_not(None)
                )
            )
            return {str(node): str(state) for node, state in rows}

    async def set_message_ts(self, request_id: str, ts: str) -> None:
        """Remember the approval message, so results can go in its thread and it can be updated."""
        async with self._engine.begin() as conn:
            await conn.execute(update(requests).where(requests.c.id == request_id).values(message_ts=ts))

    async def due_for_expiry(self, now: datetime, limit: int = 100) -> list[UnlockRequest]:
        """Pending requests whose TTL has passed, oldest first (the sweeper expires them with a CAS)."""
        query = (
            select(requests.c.id)
            .where(requests.c.state == RequestState.PENDING.value, requests.c.expires_at <= now)
            .order_by(requests.c.expires_at, requests.c.id)
            .limit(limit)
        )
        return await self._select_requests(query)

    async def stale_executions(
        self, now: datetime, limit: int = 20, *, grace: timedelta = timedelta(seconds=60)
    ) -> list[UnlockRequest]:
        """Requests whose runner seems gone, for another runner to take over.

        That is: `executing` with the lease expired (or never taken, for longer than `grace`), or `approved`
        for longer than `grace` without a live lease. Pass the lease length as `grace`.
        """
        cutoff = now - grace
        no_live_lease = or_(requests.c.lease_until.is_(None), requests.c.lease_until <= now)
        executing = and_(
            requests.c.state == RequestState.EXECUTING.value,
            or_(
                requests.c.lease_until <= now,
                and_(requests.c.lease_until.is_(None), requests.c.updated_at <= cutoff),
            ),
        )
        approved = and_(requests.c.state == RequestState.APPROVED.value, requests.c.updated_at <= cutoff, no_live_lease)
        query = (
            select(requests.c.id)
            .where(or_(executing, approved))
            .order_by(requests.c.updated_at, requests.c.id)
            .limit(limit)
        )
        return await self._select_requests(query)

    # -- leases --------------------------------------------------------------------------------------------

    async def acquire_lease(self, request_id: str, owner: str, until: datetime, now: datetime) -> bool:
        """Take (or take over) the right to run an `executing` request: free, already ours, or expired."""
        condition = and_(
            requests.c.id == request_id,
            requests.c.state == RequestState.EXECUTING.value,
            or_(
                requests.c.lease_owner.is_(None),
                requests.c.lease_owner == owner,
                requests.c.lease_until.is_(None),
                requests.c.lease_until <= now,
            ),
        )
        return await self._update_one(condition, lease_owner=owner, lease_until=until)

    async def renew_lease(self, request_id: str, owner: str, until: datetime) -> bool:
        """Extend our lease; False means another runner took it over (or the request left `executing`)."""
        condition = and_(
            requests.c.id == request_id,
            requests.c.state == RequestState.EXECUTING.value,
            requests.c.lease_owner == owner,
        )
        return await self._update_one(condition, lease_until=until)

    async def release_lease(self, request_id: str, owner: str) -> None:
        """Give the lease up, if it is still ours."""
        condition = and_(requests.c.id == request_id, requests.c.lease_owner == owner)
        await self._update_one(condition, lease_owner=None, lease_until=None)

    # -- per-node results ----------------------------------------------------------------------------------

    async def record_results(
        self, request_id: str, results: Sequence[NodeResult], *, actor: str, now: datetime
    ) -> None:
        """Set (or overwrite, e.g. `unknown` later resolved) each node's result, with a `node_result` event
        per node, in one transaction. A node that is not part of the request is an error and changes nothing.
        """
        if not results:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                update(request_nodes)
                .where(
                    request_nodes.c.request_id == bindparam("b_request_id"),
                    request_nodes.c.node == bindparam("b_node"),
                )
                .values(
                    status=bindparam("b_status"),
                    reason=bindparam("b_reason"),
                    modelarts_request_id=bindparam("b_modelarts_request_id"),
                    result_at=bindparam("b_result_at", type_=UTCDateTime()),
                ),
                [
                    {
                        "b_request_id": request_id,
                        "b_node": r.node,
                        "b_status": NodeStatus(r.status).value,
                        "b_reason": r.reason,
                        "b_modelarts_request_id": r.request_id,
                        "b_result_at": now,
                    }
                    for r in results
                ],
            )
            pool = (await conn.execute(select(requests.c.pool).where(requests.c.id == request_id))).scalar()
            if pool is None:
                raise LookupError(f"no request {request_id}")
            # Only the nodes being recorded are looked up: a 2,000-node request records a chunk at a time, and
            # reading all its nodes for each chunk cost a quarter of the recording (BENCHMARKS.md).
            names = sorted({r.node for r in results})
            known: set[str] = set()
            for start in range(0, len(names), _KEYS_PER_STATEMENT):
                part = names[start : start + _KEYS_PER_STATEMENT]
                found = await conn.execute(
                    select(request_nodes.c.node).where(
                        request_nodes.c.request_id == request_id, request_nodes.c.node.in_(part)
                    )
                )
                known.update(found.scalars())
            strangers = [name for name in names if name not in known]
            if strangers:
                raise ValueError(f"request {request_id} has no node(s) {', '.join(strangers[:5])}")
            await conn.execute(
                insert(audit_events),
                [
                    {
                        "at": now,
                        "request_id": request_id,
                        "pool": pool,
                        "event": "node_result",
                        "actor": actor,
                        "detail": {"node": r.node, "status": NodeStatus(r.status).value, "reason": r.reason},
                        "modelarts_request_id": r.request_id,
                    }
                    for r in results
                ],
            )

    async def results(self, request_id: str) -> list[NodeResult]:
        """The nodes that have a result, in request order."""
        query = (
            select(
                request_nodes.c.node,
                request_nodes.c.status,
                request_nodes.c.reason,
                request_nodes.c.modelarts_request_id,
            )
            .where(request_nodes.c.request_id == request_id, request_nodes.c.status.is_not(None))
            .order_by(request_nodes.c.position)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            NodeResult(node=r.node, status=NodeStatus(r.status), reason=r.reason, request_id=r.modelarts_request_id)
            for r in rows
        ]

    async def nodes_without_result(self, request_id: str) -> list[str]:
        """The nodes still to do (after a crash or takeover), in request order."""
        query = (
            select(request_nodes.c.node)
            .where(request_nodes.c.request_id == request_id, request_nodes.c.status.is_(None))
            .order_by(request_nodes.c.position)
        )
        async with self._engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    # -- Slack delivery dedupe -----------------------------------------------------------------------------

    async def first_delivery(self, key: str, now: datetime) -> bool:
        """True the first time `key` is seen (by any process), False for every repeat.

        Calls made while a write is under way share the next one (a group commit): a burst of Slack deliveries
        costs one transaction per batch, not one each, which keeps the event loop free to acknowledge them.
        """
        loop = asyncio.get_running_loop()
        writer = self._delivery_writer
        if writer is not None and writer.get_loop() is not loop:  # a store reused from another event loop
            self._deliveries, writer = {}, None
        waiter: asyncio.Future[bool] = loop.create_future()
        self._deliveries.setdefault(key, []).append((now, waiter))
        if writer is None or writer.done():
            self._delivery_writer = loop.create_task(self._write_deliveries(), name="store:first_delivery")
        return await waiter

    async def _write_deliveries(self) -> None:
        while self._deliveries:
            keys = list(self._deliveries)[:_KEYS_PER_STATEMENT]
            batch = {key: [waiter for _, waiter in self._deliveries[key]] for key in keys}
            seen_at = {key: self._deliveries.pop(key)[0][0] for key in keys}
            try:
                inserted = await self._insert_deliveries(seen_at)
            except Exception as exc:
                for waiter in (w for waiters in batch.values() for w in waiters if not w.done()):
                    waiter.set_exception(exc)
                continue
            except BaseException:  # cancelled: nobody will answer these callers, so do not leave them waiting
                for waiter in (w for waiters in batch.values() for w in waiters):
                    waiter.cancel()
                raise
            for key, waiters in batch.items():
                first = key in inserted  # goes to one caller only, even when a key came twice in one batch
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(first)
                        first = False

    async def _insert_deliveries(self, keys: Mapping[str, datetime]) -> set[str]:
        """Record `keys` (key → first seen at); return those no process had recorded before."""
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = (
            dialect_insert(slack_deliveries)
            .values([{"key": key, "first_seen_at": at} for key, at in keys.items()])
            .on_conflict_do_nothing(index_elements=[slack_deliveries.c.key])
            .returning(slack_deliveries.c.key)  # rowcount is not reported by every driver here (psycopg)
        )
        async with self._engine.begin() as conn:
            return set((await conn.execute(statement)).scalars())

    async def prune_deliveries(self, older_than: datetime) -> int:
        """Forget delivery keys first seen before `older_than` (Slack stops retrying within minutes)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(slack_deliveries).where(slack_deliveries.c.first_seen_at < older_than))
        return result.rowcount

    # -- audit trail ---------------------------------------------------------------------------------------

    async def audit(
        self,
        event: str,
        *,
        request_id: str | None,
        actor: str,
        now: datetime,
        detail: Mapping[str, Any] | None = None,
        modelarts_request_id: str | None = None,
        pool: str | None = None,
    ) -> None:
        """Append an event; its pool is copied from the request when not given."""
        async with self._engine.begin() as conn:
            await _insert_audit(
                conn,
                event,
                request_id=request_id,
                pool=pool,
                actor=actor,
                at=now,
                detail=detail,
                modelarts_request_id=modelarts_request_id,
            )

    async def audit_events(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        pool: str | None = None,
        *,
        request_id: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Events with `since <= at < until`, optionally of one pool or request, in the order written."""
        query = select(audit_events).order_by(audit_events.c.id)
        if since is not None:
            query = query.where(audit_events.c.at >= since)
        if until is not None:
            query = query.where(audit_events.c.at < until)
        if pool is not None:
            query = query.where(audit_events.c.pool == pool)
        if request_id is not None:
            query = query.where(audit_events.c.request_id == request_id)
        if limit is not None:
            query = query.limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AuditEvent(
                id=r.id,
                at=r.at,
                request_id=r.request_id,
                pool=r.pool,
                event=r.event,
                actor=r.actor,
                detail=dict(r.detail or {}),
                modelarts_request_id=r.modelarts_request_id,
            )
            for r in rows
        ]

    async def prune_audit(self, older_than: datetime) -> int:
        """Delete events older than `older_than` (the retention setting); the only deletion of the trail."""
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(audit_events).where(audit_events.c.at < older_than))
        return result.rowcount

    # -- helpers -------------------------------------------------------------------------------------------

    async def _update_one(self, condition: ColumnElement[bool], **values: Any) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(update(requests).where(condition).values(**values))
        return result.rowcount == 1

    async def _select_requests(self, id_query: Any) -> list[UnlockRequest]:
        async with self._engine.connect() as conn:
            ids = list((await conn.execute(id_query)).scalars())
            return await _load_requests(conn, ids)


async def _load_requests(conn: AsyncConnection, ids: Sequence[str]) -> list[UnlockRequest]:
    """The requests with `ids`, nodes included, in the order of `ids` (missing ones left out)."""
    if not ids:
        return []
    rows = {r.id: r for r in (await conn.execute(select(requests).where(requests.c.id.in_(ids)))).all()}
    nodes: dict[str, list[str]] = {i: [] for i in rows}
    node_rows = await conn.execute(
        select(request_nodes.c.request_id, request_nodes.c.node)
        .where(request_nodes.c.request_id.in_(list(rows)))
        .order_by(request_nodes.c.request_id, request_nodes.c.position)
    )
    for request_id, node in node_rows:
        nodes[request_id].append(node)
    return [_to_request(rows[i], nodes[i]) for i in ids if i in rows]


def _to_request(row: Row[Any], nodes: list[str]) -> UnlockRequest:
    return UnlockRequest(
        id=row.id,
        team_id=row.team_id,
        channel_id=row.channel_id,
        requester_id=row.requester_id,
        pool=row.pool,
        nodes=tuple(nodes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        state=RequestState(row.state),
        reason=row.reason,
        two_person=row.two_person,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        message_ts=row.message_ts,
        retry_of=row.retry_of,
        updated_at=row.updated_at,
        detail=row.detail,
    )


async def _insert_audit(
    conn: AsyncConnection,
    event: str,
    *,
    request_id: str | None,
    pool: str | None,
    actor: str,
    at: datetime,
    detail: Mapping[str, Any] | None,
    modelarts_request_id: str | None = None,
) -> None:
    pool_value: Any = pool
    if pool is None and request_id is not None:
        pool_value = select(requests.c.pool).where(requests.c.id == request_id).scalar_subquery()
    await conn.execute(
        insert(audit_events).values(
            at=at,
            request_id=request_id,
            pool=pool_value,
            event=event,
            actor=actor,
            detail={k: _jsonable(v) for k, v in detail.items()} if detail else None,
            modelarts_request_id=modelarts_request_id,
        )
    )


def _jsonable(value: Any) -> Any:
    """Datetimes and enums as text, so any detail can be stored as JSON."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return value


__all__ = ["TRANSITION_FIELDS", "AuditEvent", "Store"]
