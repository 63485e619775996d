"""The composition root: builds every part from settings, runs the background sweeps, closes it all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Mode, Settings
from bot.modelarts.client import ModelArtsClient
from bot.policy import Authorizer, CachedGroupDirectory, Policy, load_policy
from bot.slack.app import SlackDeps, build_app, build_web_client
from bot.slack.notifier import SlackNotifier
from bot.store import Store
from bot.workflow import Workflow, WorkflowSettings, run_periodically, utcnow

log = logging.getLogger(__name__)


async def open_store(settings: Settings) -> Store:
    """Connect; the embedded SQLite default migrates itself, a shared database must be migrated on purpose."""
    url = settings.resolved_database_url
    store = await Store.connect(url)
    try:
        if url.startswith("sqlite"):
            await store.upgrade()
        else:
            await store.ensure_schema()
    except BaseException:
        await store.close()
        raise
    return store


@dataclass
class Runtime:
    """Everything a running bot holds, wired once."""

    settings: Settings
    policy: Policy
    store: Store
    modelarts: ModelArtsClient
    web_client: AsyncWebClient
    workflow: Workflow
    slack_app: AsyncApp
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def create(cls, settings: Settings, mode: Mode) -> Runtime:
        settings.require(mode)
        policy = load_policy(settings.unlock_bot_policy)
        store = await open_store(settings)
        assert settings.slack_bot_token is not None  # guaranteed by require()
        token = settings.slack_bot_token.get_secret_value()
        web_client = build_web_client(token, settings.slack_api_url)
        modelarts = ModelArtsClient.from_settings(settings)

        async def usergroup_members(group_id: str) -> list[str]:
            response = await web_client.usergroups_users_list(usergroup=group_id)
            return list(response.get("users") or [])

        authorizer = Authorizer(
            policy,
            CachedGroupDirectory(usergroup_members, ttl_seconds=settings.unlock_bot_usergroup_cache_seconds),
        )
        workflow = Workflow(
            store=store,
            client=modelarts,
            policy=policy,
            authorizer=authorizer,
            notifier=SlackNotifier(web_client),
            settings=WorkflowSettings(lease_seconds=settings.unlock_bot_lease_seconds),
        )
        signing_secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
        slack_app = build_app(
            signing_secret=signing_secret if mode is Mode.HTTP else None,
            client=web_client,
            deps=SlackDeps(
                workflow=workflow,
                authorizer=authorizer,
                modelarts=modelarts,
                store=store,
                command=settings.unlock_bot_command,
            ),
        )
        return cls(
            settings=settings,
            policy=policy,
            store=store,
            modelarts=modelarts,
            web_client=web_client,
            workflow=workflow,
            slack_app=slack_app,
        )

    def start_background(self) -> None:
        """Expiry sweep and crash recovery on every replica; the store's compare-and-set keeps them single."""
        interval = self.settings.unlock_bot_sweep_interval_seconds
        self._tasks.append(
            asyncio.create_task(run_periodically("expire", interval, self.workflow.expire_due, stop=self._stop))
        )
        self._tasks.append(
            asyncio.create_task(run_periodically("resume", interval, self.workflow.resume_stale, stop=self._stop))
        )
        retention = self.settings.unlock_bot_audit_retention_days
        if retention is not None:

            async def prune() -> int:
                return await self.store.prune_audit(utcnow() - timedelta(days=retention))

            self._tasks.append(asyncio.create_task(run_periodically("prune", 3600.0, prune, stop=self._stop)))

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.modelarts.aclose()
        await self.store.close()
        session = getattr(self.web_client, "session", None)
        if session is not None and not session.closed:
            await session.close()
