"""Alembic, driven from code: upgrading to head and checking the database is there.

The migration scripts ship inside the package (`bot/store/migrations/`), so no `alembic.ini` is needed at
run time; `migrations/alembic.ini` exists only for developers running the `alembic` command.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class SchemaNotMigrated(Exception):
    """The database is not at the schema this code expects; the message says what to run."""

    def __init__(self, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        found = "has no unlock-bot schema" if current is None else f"is at schema revision {current}"
        super().__init__(
            f"the database {found}, but this version of unlock-bot needs revision {head}: "
            "run `unlock-bot db upgrade` (with the same DATABASE_URL) and start again"
        )


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for the packaged migrations; `url` is used only when no connection is given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None when it was never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> None:
    """`alembic upgrade <revision>` on `connection` (a sync connection, e.g. inside `run_sync`)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
