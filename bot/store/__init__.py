"""Durable state and the audit trail: SQLAlchemy 2 (async) on SQLite or PostgreSQL, migrated by Alembic."""

from bot.store.engine import DatabaseUnavailable
from bot.store.schema import SchemaNotMigrated
from bot.store.store import AuditEvent, Store

__all__ = ["AuditEvent", "DatabaseUnavailable", "SchemaNotMigrated", "Store"]
