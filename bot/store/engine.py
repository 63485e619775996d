"""Making the async engine: the per-backend settings that keep concurrent writers safe live here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.config import normalize_database_url

# A writer that finds the SQLite file locked waits this long instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseUnavailable(Exception):
    """The database cannot be reached or used; the message names it (password hidden) and says why."""

    def __init__(self, url: str | URL, cause: BaseException) -> None:
        self.url = safe_url(url)
        reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        why = reason[0] if reason else type(cause).__name__
        super().__init__(f"cannot use the database {self.url}: {why}")


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL for `url`, with plain `sqlite://` / `postgresql://` mapped to the async drivers."""
    return make_url(normalize_database_url(url))


def safe_url(url: str | URL) -> str:
    """The URL for messages and logs, password hidden."""
    parsed = url if isinstance(url, URL) else parse_url(url)
    return parsed.render_as_string(hide_password=True)


def make_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An async engine for SQLite (aiosqlite) or PostgreSQL (asyncpg, psycopg).

    SQLite: the file's directory is created, and every connection gets WAL (readers never block the
    writer) and a busy timeout (concurrent writers queue instead of failing). PostgreSQL: connections are
    pinged before use, so a restarted server or a dropped idle connection costs a reconnect, not an error.
    """
    parsed = url if isinstance(url, URL) else parse_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise ValueError("an in-memory SQLite database is not supported: give a file, sqlite:///path/to/db")
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(parsed, **kwargs)
    raise ValueError(
        f"unsupported database URL {safe_url(parsed)}: use sqlite+aiosqlite:///… or postgresql+asyncpg://…"
    )


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    finally:
        cursor.close()
