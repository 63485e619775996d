"""`unlock-bot audit`: the append-only trail as JSON lines or CSV, one row per event, times in UTC.

An auditor asks "who asked for what, who let it happen, and what did ModelArts do", usually with grep or a
spreadsheet and one row at a time. So every row carries, besides the event itself (when, what, who did it),
the request's context — requester, approver (or whoever denied or cancelled it), reason, the request's state
now — and, for a node's result, the node, its status, why, and ModelArts' request ID. Times are UTC with a
`Z`, everywhere in the row, detail included. Rows come in the order the events were written.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from bot.config import Settings
from bot.requests import RequestState, UnlockRequest
from bot.store import AuditEvent, Store

COLUMNS = (
    "at",
    "event",
    "request_id",
    "pool",
    "actor",
    "requester_id",
    "approver_id",
    "decided_by",
    "request_state",
    "reason",
    "node",
    "status",
    "node_reason",
    "modelarts_request_id",
    "detail",
)

# States a request can only be in if nobody approved it: its `decided_by` is then not an approver.
NOT_APPROVED = frozenset({RequestState.PENDING, RequestState.DENIED, RequestState.CANCELLED, RequestState.EXPIRED})


def utc_text(moment: datetime) -> str:
    """`2026-12-01T09:30:00.123456Z`: UTC, fixed width, the `Z` spreadsheets and `date -d` understand."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _utc_detail(value: Any, key: str = "") -> Any:
    """The event's detail with its timestamps (keys ending in `_at`) in the same UTC form as `at`."""
    if isinstance(value, Mapping):
        return {str(k): _utc_detail(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_utc_detail(v) for v in value]
    if isinstance(value, str) and key.endswith("_at"):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return utc_text(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    return value


def audit_row(event: AuditEvent, request: UnlockRequest | None) -> dict[str, Any]:
    """One event, flattened into COLUMNS; `detail` is the event's own structured detail."""
    detail = _utc_detail(dict(event.detail))
    approver = None
    decided_by = None
    state = None
    if request is not None:
        state = request.state.value
        decided_by = request.decided_by
        if request.state not in NOT_APPROVED:
            approver = request.decided_by
    is_node = event.event == "node_result"
    return {
        "at": utc_text(event.at),
        "event": event.event,
        "request_id": event.request_id,
        "pool": event.pool,
        "actor": event.actor,
        "requester_id": request.requester_id if request else detail.get("requester_id"),
        "approver_id": approver,
        "decided_by": decided_by,
        "request_state": state,
        "reason": request.reason if request else (None if is_node else detail.get("reason")),
        "node": detail.get("node") if is_node else None,
        "status": detail.get("status") if is_node else None,
        "node_reason": detail.get("reason") if is_node else None,
        "modelarts_request_id": event.modelarts_request_id,
        "detail": detail,
    }


async def audit_rows(
    store: Store, since: datetime | None = None, until: datetime | None = None, pool: str | None = None
) -> list[dict[str, Any]]:
    """The rows for events with `since <= at < until` (of `pool`, if given), oldest first."""
    events = await store.audit_events(since=since, until=until, pool=pool)
    requests = await store.get_requests(e.request_id for e in events if e.request_id is not None)
    return [audit_row(e, requests.get(e.request_id) if e.request_id else None) for e in events]


def write_rows(rows: Iterable[dict[str, Any]], fmt: str, out: TextIO) -> None:
    """JSON lines (one object per event, keys in COLUMNS order) or CSV with a header row."""
    if fmt == "json":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return
    if fmt != "csv":
        raise ValueError(f"unknown audit format {fmt!r}: use json or csv")
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {k: ("" if v is None else v) for k, v in row.items()}
        flat["detail"] = json.dumps(row["detail"], ensure_ascii=False, sort_keys=True, default=str)
        writer.writerow(flat)


async def export_audit(
    settings: Settings,
    *,
    since: datetime | None,
    until: datetime | None,
    pool: str | None,
    fmt: str,
    out: TextIO,
) -> int:
    """Write the trail of the configured database; read-only (a database never migrated is refused)."""
    store = await Store.connect(settings.resolved_database_url)
    try:
        await store.ensure_schema()
        write_rows(await audit_rows(store, since, until, pool), fmt, out)
    finally:
        await store.close()
    return 0


async def apply_retention(store: Store, retention_days: int | None, now: datetime) -> int:
    """Delete events older than `retention_days` before `now`; with no retention set, keep everything.

    The bot never updates or deletes an event otherwise: this is the one, opt-in, exception
    (UNLOCK_BOT_AUDIT_RETENTION_DAYS).
    """
    if retention_days is None:
        return 0
    if retention_days < 1:
        raise ValueError("the audit retention must be at least 1 day")
    return await store.prune_audit(now - timedelta(days=retention_days))
