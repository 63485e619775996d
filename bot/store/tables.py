"""The database tables, as SQLAlchemy Core objects.

`migrations/versions/*.py` create exactly these; a test compares the two with Alembic's `compare_metadata`.
Constraint names come from the naming convention so migrations can refer to them on every backend.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

from bot.requests import NodeStatus, RequestState

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only turns an `INTEGER PRIMARY KEY` into an auto-incrementing row id.
AUDIT_ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is timezone-aware UTC going in and coming out.

    PostgreSQL keeps the zone (timestamptz); SQLite drops it, so values are stored as naive UTC, which also
    keeps SQLite's text comparisons (`expires_at <= ?`) correct. Naive input is refused: it is always a bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to the store; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


STATE_VALUES = [s.value for s in RequestState]
NODE_STATUS_VALUES = [s.value for s in NodeStatus]

requests = Table(
    "requests",
    metadata,
    Column("id", String(64), nullable=False),
    Column("team_id", String(32), nullable=False),
    Column("channel_id", String(32), nullable=False),
    Column("requester_id", String(32), nullable=False),
    Column("pool", String(128), nullable=False),
    Column("state", String(32), nullable=False),
    Column("reason", Text(), nullable=True),
    Column("two_person", Boolean(), nullable=False),
    Column("decided_by", String(64), nullable=True),
    Column("decided_at", UTCDateTime(), nullable=True),
    Column("message_ts", String(32), nullable=True),
    Column("retry_of", String(64), ForeignKey("requests.id", ondelete="SET NULL"), nullable=True),
    Column("detail", Text(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    # Who is running an `executing` request, and until when; another replica may take over after that.
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    PrimaryKeyConstraint("id"),
    CheckConstraint(_in("state", STATE_VALUES), name="state"),
    # The expiry sweep (pending, expires_at <= now) and the stale-execution sweep (state, lease_until).
    Index(None, "state", "expires_at"),
    Index(None, "state", "lease_until"),
    Index(None, "pool", "created_at"),
)

# One row per requested node, in request order; the result columns stay NULL until the node has one.
request_nodes = Table(
    "request_nodes",
    metadata,
    Column("request_id", String(64), ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer(), nullable=False),
    Column("node", String(128), nullable=False),
    Column("preview", String(16), nullable=True),  # lock state read when the request was made
    Column("status", String(16), nullable=True),
    Column("reason", Text(), nullable=True),
    Column("modelarts_request_id", String(128), nullable=True),
    Column("result_at", UTCDateTime(), nullable=True),
    PrimaryKeyConstraint("request_id", "position"),
    UniqueConstraint("request_id", "node"),
    CheckConstraint(f"status IS NULL OR {_in('status', NODE_STATUS_VALUES)}", name="status"),
)

# Append-only. No foreign key: the trail must outlive (and not block deleting) the requests it describes.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", AUDIT_ID_TYPE, autoincrement=True, nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("pool", String(128), nullable=True),
    Column("event", String(64), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("detail", JSON(), nullable=True),
    Column("modelarts_request_id", String(128), nullable=True),
    PrimaryKeyConstraint("id"),
    Index(None, "at"),
    Index(None, "request_id", "id"),
    Index(None, "pool", "at"),
    sqlite_autoincrement=True,  # never reuse an ID, even after pruning the newest events
)

# Slack retries a delivery it thinks failed; the first sight of each key wins. Pruned by age.
slack_deliveries = Table(
    "slack_deliveries",
    metadata,
    Column("key", String(255), nullable=False),
    Column("first_seen_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("key"),
    Index(None, "first_seen_at"),
)
