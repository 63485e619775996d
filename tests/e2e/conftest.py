"""The running product for end-to-end tests: simulator, Slack stand-in and bot on loopback ports.

Every test gets its own stack and database (SQLite always, PostgreSQL too when configured), and drives
it only through real interfaces: signed HTTP into the bot, the stand-in's record of Web API calls, the
simulator's record of ModelArts calls, and the store the bot wrote.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.sandbox.driver import SlackDriver
from bot.sandbox.stack import LocalStack, start_local_stack
from bot.store import Store
from tests.support.databases import database_urls, temporary_database

REQUESTER = "U0REQUESTER"
APPROVER = "U0APPROVER"
LEAD = "U0LEAD"  # an approver through the S0SRELEAD user group, and a requester
STRANGER = "U0STRANGER"
CHANNEL = "C0INCIDENTS"
OTHER_CHANNEL = "C0RANDOM"
USERGROUPS = {"S0ONCALL": [REQUESTER, LEAD], "S0SRELEAD": [LEAD]}

POLICY = f"""
requesters: {{users: [{APPROVER}], usergroups: [S0ONCALL]}}
approvers: {{users: [{APPROVER}], usergroups: [S0SRELEAD]}}
channels: [{CHANNEL}]
approval:
  two_person: true
  ttl_seconds: 900
limits:
  max_nodes_per_request: 600
pools:
  - match: "pool-dev-*"
    two_person: false
    ttl_seconds: 2
"""


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    return path


@pytest.fixture(params=database_urls())
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    async with temporary_database(request.param) as url:
        if not url.startswith("sqlite"):
            store = await Store.connect(url)
            try:
                await store.upgrade()  # a shared database is migrated on purpose, as in production
            finally:
                await store.close()
        yield url


@pytest.fixture
def stack_options() -> dict[str, object]:
    """Override in a test module (or parametrize) to change the stack's settings."""
    return {}


@pytest.fixture
def stack(
    policy_path: Path, tmp_path: Path, database_url: str, stack_options: dict[str, object]
) -> Iterator[LocalStack]:
    options: dict[str, object] = {
        "unlock_bot_sweep_interval_seconds": 0.25,
        "unlock_bot_max_attempts": 3,
        "unlock_bot_retry_deadline_seconds": 10.0,
        "unlock_bot_http_timeout_seconds": 5.0,
        "unlock_bot_log_format": "text",
    }
    options.update(stack_options)
    running = start_local_stack(
        policy_path=policy_path,
        state_dir=tmp_path / "state",
        database_url=database_url,
        usergroups=USERGROUPS,
        **options,
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def driver(stack: LocalStack) -> AsyncIterator[SlackDriver]:
    async with stack.driver() as slack:
        yield slack


@pytest.fixture
async def store(stack: LocalStack) -> AsyncIterator[Store]:
    """The bot's database, opened from the test's side to check what was recorded."""
    opened = await Store.connect(stack.settings.resolved_database_url)
    try:
        yield opened
    finally:
        await opened.close()
