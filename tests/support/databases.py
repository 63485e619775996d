"""Throwaway databases for tests: a SQLite file always; PostgreSQL when UNLOCK_BOT_TEST_POSTGRES_URL is set.

Use from any test folder:

    @pytest.fixture(params=database_urls())
    async def database_url(request):
        async with temporary_database(request.param) as url:
            yield url

`fresh_database(base)` returns the URL of a new, empty database: a file in a new temporary directory for
SQLite, a `CREATE DATABASE <base name>_<random>` on the same PostgreSQL server otherwise (the user needs
CREATEDB). `drop_database(url)` removes it again.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from _pytest.mark.structures import ParameterSet
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

POSTGRES_ENV = "UNLOCK_BOT_TEST_POSTGRES_URL"
SQLITE_BASE = "sqlite+aiosqlite://"

# What fresh_database made, so drop_database only ever removes that: SQLite temporary directories, and for
# each PostgreSQL database the server URL it was created from (to connect to while dropping it).
_sqlite_dirs: set[Path] = set()
_postgres_bases: dict[str, str] = {}


def postgres_url() -> str | None:
    """The PostgreSQL server tests may use (its database is only connected to, never changed)."""
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if not url:
        return None
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def database_urls(*, psycopg: bool = False) -> list[ParameterSet]:
    """pytest params of base URLs: SQLite, and PostgreSQL (asyncpg; psycopg too if asked) or a skip."""
    params = [pytest.param(SQLITE_BASE, id="sqlite")]
    pg = postgres_url()
    if pg is None:
        params.append(
            pytest.param(
                None,
                id="postgres",
                marks=[pytest.mark.postgres, pytest.mark.skip(reason=f"{POSTGRES_ENV} is not set")],
            )
        )
        return params
    params.append(pytest.param(_with_driver(pg, "asyncpg"), id="postgres", marks=pytest.mark.postgres))
    if psycopg:
        params.append(pytest.param(_with_driver(pg, "psycopg"), id="postgres-psycopg", marks=pytest.mark.postgres))
    return params


def _with_driver(url: str, driver: str) -> str:
    return make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


async def fresh_database(base: str) -> str:
    """The URL of a new empty database like `base` (`sqlite+aiosqlite://` or a PostgreSQL URL)."""
    parsed = make_url(base)
    if parsed.get_backend_name() == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="unlock-bot-test-"))
        _sqlite_dirs.add(directory)
        # A subdirectory that does not exist yet: the store must create it.
        return f"sqlite+aiosqlite:///{directory / 'state' / 'unlock-bot.db'}"
    name = f"{parsed.database or 'unlockbot'}_{secrets.token_hex(5)}"
    await _admin(base, f'CREATE DATABASE "{name}"')
    url = parsed.set(database=name).render_as_string(hide_password=False)
    _postgres_bases[url] = base
    return url


async def drop_database(url: str) -> None:
    """Remove a database made by `fresh_database` (connections still open to it are closed by force)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        directory = Path(parsed.database or "").parent.parent
        if directory in _sqlite_dirs:
            _sqlite_dirs.discard(directory)
            shutil.rmtree(directory, ignore_errors=True)
        return
    base = _postgres_bases.pop(url, None)
    if base is not None:
        await _admin(base, f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


@asynccontextmanager
async def temporary_database(base: str) -> AsyncIterator[str]:
    """A fresh database for the duration of the block."""
    url = await fresh_database(base)
    try:
        yield url
    finally:
        await drop_database(url)


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()
