"""Bolt `AsyncApp` wiring: the Web API client, request verification, delivery dedupe and the listeners."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.modelarts.client import ModelArtsClient
from bot.policy import Authorizer
from bot.store import Store
from bot.workflow import Workflow, utcnow

log = logging.getLogger(__name__)


def build_web_client(token: str, base_url: str) -> AsyncWebClient:
    """A Web API client that waits out 429s and retries transient server and connection errors."""
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


@dataclass(frozen=True)
class SlackDeps:
    """What listeners need, handed to each module's `register`."""

    workflow: Workflow
    authorizer: Authorizer
    modelarts: ModelArtsClient
    store: Store
    command: str


def delivery_key(body: dict[str, Any]) -> str | None:
    """A key that is equal for re-deliveries of one Slack request and different for distinct requests."""
    kind = body.get("type")
    if kind is None and body.get("command"):
        trigger = body.get("trigger_id")
        return f"command:{trigger}" if trigger else None
    if kind == "block_actions":
        actions = body.get("actions") or [{}]
        action = actions[0]
        user = (body.get("user") or {}).get("id")
        return f"action:{user}:{action.get('action_id')}:{action.get('action_ts')}"
    if kind == "view_submission":
        view = body.get("view") or {}
        return f"view:{view.get('id')}:{view.get('hash')}"
    return None


def build_app(*, signing_secret: str | None, client: AsyncWebClient, deps: SlackDeps) -> AsyncApp:
    """The Bolt app with every listener registered; `signing_secret` is None only in Socket Mode."""
    app = AsyncApp(
        client=client,  # carries the token
        signing_secret=signing_secret,
        request_verification_enabled=signing_secret is not None,
        process_before_response=False,
        logger=logging.getLogger("bot.slack.bolt"),
    )

    @app.middleware
    async def drop_redeliveries(body: dict[str, Any], next: Any) -> BoltResponse | None:
        """A re-delivered command or click (Slack retry, network replay) is acknowledged and ignored.

        The record lives in the store, so it holds whichever replica gets each delivery.
        """
        key = delivery_key(body)
        if key is not None and not await deps.store.first_delivery(key, utcnow()):
            log.info("duplicate delivery ignored", extra={"event": "duplicate_delivery", "key": key})
            return BoltResponse(status=200, body="")
        await next()
        return None

    from bot.slack.listeners import actions, commands, modal

    commands.register(app, deps)
    actions.register(app, deps)
    modal.register(app, deps)
    return app
