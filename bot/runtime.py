"""The composition root: builds every part from settings, runs the background sweeps, closes it all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import SQLAlchemyError

from bot.audit import apply_retention
from bot.config import Mode, Settings
from bot.metrics import Metrics
from bot.modelarts.client import ModelArtsClient
from bot.policy import Authorizer, CachedGroupDirectory, Policy, load_policy
from bot.slack.app import SlackDeps, build_app, build_web_client
from bot.slack.notifier import SlackNotifier
from bot.store import DatabaseUnavailable, SchemaNotMigrated, Store
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


async def check_database(settings: Settings) -> None:
    """Fail before serving, with a sentence rather than a traceback, when the database is unusable.

    Raises `DatabaseUnavailable` (cannot connect) or `SchemaNotMigrated` (a shared database that `unlock-bot db
    upgrade` has not been run on). The SQLite default is migrated here, as `open_store` does.
    """
    store = await connect_checked(settings)
    await store.close()


async def connect_checked(settings: Settings) -> Store:
    """`open_store`, with connection failures turned into `DatabaseUnavailable` naming the (password-less) URL."""
    try:
        return await open_store(settings)
    except SchemaNotMigrated:
        raise
    except (OSError, SQLAlchemyError) as exc:
        raise DatabaseUnavailable(settings.resolved_database_url, exc) from exc


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
    # This bot's own registry, served on /metrics: several bots in one process never share a series.
    metrics: Metrics = field(default_factory=Metrics)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def create(cls, settings: Settings, mode: Mode) -> Runtime:
        settings.require(mode)
        policy = load_policy(settings.unlock_bot_policy)
        store = await open_store(settings)
        assert settings.slack_bot_token is not None  # guaranteed by require()
        token = settings.slack_bot_token.get_secret_value()
        metrics = Metrics()
        web_client = build_web_client(token, settings.slack_api_url, metrics=metrics)
        modelarts = ModelArtsClient.from_settings(settings, metrics=metrics)

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
            metrics=metrics,
            settings=WorkflowSettings(
                lease_seconds=settings.unlock_bot_lease_seconds,
                # A call sent by a replica that died is over, one way or the other, after the HTTP timeout.
                in_flight_seconds=settings.unlock_bot_http_timeout_seconds,
            ),
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
            metrics=metrics,
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

        async def prune_deliveries() -> int:
            # Slack re-delivers within minutes; a day of delivery keys is plenty to catch every retry.
            return await self.store.prune_deliveries(utcnow() - timedelta(days=1))

        self._tasks.append(
            asyncio.create_task(run_periodically("prune_deliveries", 3600.0, prune_deliveries, stop=self._stop))
        )
        retention = self.settings.unlock_bot_audit_retention_days
        if retention is not None:

            async def prune() -> int:
                return await apply_retention(self.store, retention, utcnow())

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
