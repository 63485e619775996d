"""`unlock-bot db upgrade`, and how `serve` / `audit` start on a database: the real CLI, as a subprocess.

A shared database is migrated on purpose (`db upgrade`), never behind the operator's back by a replica
starting up; a server that finds it un-migrated, or unreachable, says so in one sentence and exits non-zero.
The embedded SQLite default (one process) migrates itself.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.serving import free_port
from bot.store import Store
from bot.store.schema import head_revision
from tests.support.databases import database_urls, postgres_url, temporary_database
from tests.support.replicas import base_env, run_cli

POLICY = "requesters: {users: [U0REQUESTER]}\napprovers: {users: [U0APPROVER]}\n"


@pytest.fixture(params=database_urls(psycopg=True))
async def empty_database(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A database with no schema at all, on each backend (and each PostgreSQL driver)."""
    async with temporary_database(request.param) as url:
        yield url


@pytest.fixture
def serve_env(tmp_path: Path) -> dict[str, str]:
    """Everything `serve` needs except the database; nothing it talks to has to exist to fail early."""
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    return base_env(
        {
            "SLACK_BOT_TOKEN": "xoxb-sandbox-token",
            "SLACK_SIGNING_SECRET": "not-a-real-secret",
            "SLACK_API_URL": f"http://127.0.0.1:{free_port()}/api/",
            "HUAWEICLOUD_SDK_AK": "SIMAK",
            "HUAWEICLOUD_SDK_SK": "SIMSK",
            "HUAWEICLOUD_SDK_PROJECT_ID": "sim-project",
            "MODELARTS_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "UNLOCK_BOT_POLICY": str(policy),
            "UNLOCK_BOT_STATE_DIR": str(tmp_path / "state"),
            "UNLOCK_BOT_LOG_FORMAT": "text",
        }
    )


async def revision(url: str) -> str | None:
    store = await Store.connect(url)
    try:
        return await store.current_revision()
    finally:
        await store.close()


async def test_db_upgrade_migrates_an_empty_database_and_is_idempotent(empty_database: str) -> None:
    env = base_env({"DATABASE_URL": empty_database})
    first = run_cli(["db", "upgrade"], env)
    assert first.returncode == 0, first.stderr
    assert f"upgraded from an empty database to schema revision {head_revision()}" in first.stdout
    assert await revision(empty_database) == head_revision()

    again = run_cli(["db", "upgrade"], env)
    assert again.returncode == 0, again.stderr
    assert f"is up to date (schema revision {head_revision()})" in again.stdout

    store = await Store.connect(empty_database)
    try:
        await store.ensure_schema()  # what `serve` and `audit` check
    finally:
        await store.close()


@pytest.mark.postgres
@pytest.mark.skipif(postgres_url() is None, reason="UNLOCK_BOT_TEST_POSTGRES_URL is not set")
async def test_serve_refuses_an_unmigrated_postgresql(serve_env: dict[str, str]) -> None:
    base = postgres_url()
    assert base is not None
    async with temporary_database(base) as url:
        done = run_cli(["serve", "--host", "127.0.0.1", "--port", str(free_port())], {**serve_env, "DATABASE_URL": url})
        assert done.returncode != 0
        assert "unlock-bot db upgrade" in done.stderr and "no unlock-bot schema" in done.stderr
        assert "Traceback" not in done.stderr + done.stdout
        assert await revision(url) is None  # starting a replica never migrates a shared database


async def test_audit_refuses_an_unmigrated_database(empty_database: str) -> None:
    done = run_cli(["audit"], base_env({"DATABASE_URL": empty_database}))
    assert done.returncode != 0 and done.stdout == ""
    assert "unlock-bot db upgrade" in done.stderr and "Traceback" not in done.stderr
    assert await revision(empty_database) is None  # an export never creates a schema


def test_serve_names_an_unreachable_database_without_its_password(serve_env: dict[str, str]) -> None:
    url = f"postgresql+asyncpg://bot:hunter2secret@127.0.0.1:{free_port()}/unlockbot"
    done = run_cli(["serve", "--port", str(free_port())], {**serve_env, "DATABASE_URL": url})
    assert done.returncode != 0
    assert "cannot use the database postgresql+asyncpg://bot:***@127.0.0.1:" in done.stderr
    assert "hunter2secret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


async def test_serve_on_the_sqlite_default_migrates_itself(serve_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=serve_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
        database = Path(serve_env["UNLOCK_BOT_STATE_DIR"]) / "unlock-bot.db"
        assert database.exists()
        assert await revision(f"sqlite+aiosqlite:///{database}") == head_revision()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(15)
    # A clean shutdown (uvicorn re-raises the SIGTERM it handled once it is done, hence -15).
    assert code in (0, -signal.SIGTERM), log_path.read_text()
    assert "Application shutdown complete" in log_path.read_text()
