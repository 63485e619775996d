"""`unlock-bot audit`: the append-only trail as JSON lines or CSV, one row per event, times in UTC.

Each row carries the event itself plus the request's requester, approver and reason, so a row can be read
(or grepped) alone; node results carry the node, its status and ModelArts' request ID.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
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
    "reason",
    "node",
    "status",
    "modelarts_request_id",
    "detail",
)

NOT_APPROVED = {RequestState.PENDING, RequestState.DENIED, RequestState.CANCELLED, RequestState.EXPIRED}


def audit_row(event: AuditEvent, request: UnlockRequest | None) -> dict[str, Any]:
    """One event, flattened: the columns above, `detail` the event's own structured detail."""
    detail = dict(event.detail)
    approver = None
    if request is not None and request.state not in NOT_APPROVED:
        approver = request.decided_by
    return {
        "at": event.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "event": event.event,
        "request_id": event.request_id,
        "pool": event.pool,
        "actor": event.actor,
        "requester_id": request.requester_id if request else detail.get("requester_id"),
        "approver_id": approver,
        "reason": request.reason if request else detail.get("reason"),
        "node": detail.get("node"),
        "status": detail.get("status"),
        "modelarts_request_id": event.modelarts_request_id,
        "detail": detail,
    }


async def audit_rows(
    store: Store, since: datetime | None, until: datetime | None, pool: str | None
) -> list[dict[str, Any]]:
    events = await store.audit_events(since=since, until=until, pool=pool)
    requests: dict[str, UnlockRequest | None] = {}
    rows = []
    for event in events:
        if event.request_id is not None and event.request_id not in requests:
            requests[event.request_id] = await store.get_request(event.request_id)
        rows.append(audit_row(event, requests.get(event.request_id) if event.request_id else None))
    return rows


def write_rows(rows: Iterable[dict[str, Any]], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return
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
    store = await Store.connect(settings.resolved_database_url)
    try:
        await store.ensure_schema()
        write_rows(await audit_rows(store, since, until, pool), fmt, out)
    finally:
        await store.close()
    return 0
