from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.store import Store
from tests.support.databases import database_urls, temporary_database


@pytest.fixture(params=database_urls(psycopg=True))
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """An empty database (no schema) on each backend."""
    async with temporary_database(request.param) as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A store on a migrated, empty database."""
    store = await Store.connect(database_url)
    await store.upgrade()
    try:
        yield store
    finally:
        await store.close()
