"""Initial schema: requests, their nodes, the audit trail and Slack delivery dedupe.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Written by hand to match bot/store/tables.py as of this revision; tests/store checks they agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES = (
    "pending",
    "approved",
    "executing",
    "succeeded",
    "partially_failed",
    "failed",
    "denied",
    "cancelled",
    "expired",
)
_NODE_STATUSES = ("success", "failed", "unknown")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("requester_id", sa.String(32), nullable=False),
        sa.Column("pool", sa.String(128), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("two_person", sa.Boolean(), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", _ts(), nullable=True),
        sa.Column("message_ts", sa.String(32), nullable=True),
        sa.Column("retry_of", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_until", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_requests"),
        sa.ForeignKeyConstraint(
            ["retry_of"], ["requests.id"], name="fk_requests_retry_of_requests", ondelete="SET NULL"
        ),
        sa.CheckConstraint(_in("state", _STATES), name="ck_requests_state"),
    )
    op.create_index("ix_requests_state_expires_at", "requests", ["state", "expires_at"])
    op.create_index("ix_requests_state_lease_until", "requests", ["state", "lease_until"])
    op.create_index("ix_requests_pool_created_at", "requests", ["pool", "created_at"])

    op.create_table(
        "request_nodes",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("preview", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("modelarts_request_id", sa.String(128), nullable=True),
        sa.Column("result_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("request_id", "position", name="pk_request_nodes"),
        sa.ForeignKeyConstraint(
            ["request_id"], ["requests.id"], name="fk_request_nodes_request_id_requests", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("request_id", "node", name="uq_request_nodes_request_id_node"),
        sa.CheckConstraint(f"status IS NULL OR {_in('status', _NODE_STATUSES)}", name="ck_request_nodes_status"),
    )

    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("pool", sa.String(128), nullable=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("modelarts_request_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_request_id_id", "audit_events", ["request_id", "id"])
    op.create_index("ix_audit_events_pool_at", "audit_events", ["pool", "at"])

    op.create_table(
        "slack_deliveries",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("first_seen_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_slack_deliveries"),
    )
    op.create_index("ix_slack_deliveries_first_seen_at", "slack_deliveries", ["first_seen_at"])


def downgrade() -> None:
    op.drop_table("slack_deliveries")
    op.drop_table("audit_events")
    op.drop_table("request_nodes")
    op.drop_table("requests")
