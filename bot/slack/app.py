"""Bolt `AsyncApp` wiring: the Web API client, request verification, delivery dedupe and the listeners."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import Metrics, SlackCallObserver
from bot.modelarts.client import ModelArtsClient
from bot.policy import Authorizer
from bot.store import Store
from bot.workflow import Workflow, utcnow

log = logging.getLogger(__name__)


def build_web_client(token: str, base_url: str, *, metrics: Metrics | None = None) -> AsyncWebClient:
    """A Web API client that waits out 429s and retries transient server and connection errors.

    With `metrics`, every HTTP call (retries included) is counted by a handler that only observes.
    """
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        retry_handlers=[
            *([SlackCallObserver(metrics)] if metrics is not None else []),  # first: it must see every attempt
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
        # Not the view's hash: it stays the same when a person fixes a field error and submits again.
        view = body.get("view") or {}
        trigger = body.get("trigger_id")
        return f"view:{view.get('id')}:{trigger}" if trigger else f"view:{view.get('id')}:{view.get('hash')}"
    return None


class DuplicateDelivery(asyncio.CancelledError):
    """Ends a listener right after `ack()`: its delivery was handled before (a cancellation, so Bolt's error
    handler does not log it as a failure, and no `except Exception` in a listener swallows it)."""


class DeliveryAck(AsyncAck):
    """Bolt's `ack`, then the verdict on whether this delivery is new.

    Every listener acknowledges before doing anything, so a re-delivery is acknowledged exactly like the
    first delivery and stops there; the database write that decides it runs while the acknowledgement is
    already on its way to Slack.
    """

    def __init__(self, verdict: asyncio.Future[bool], key: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Bolt's __init__ has no annotations
        self._verdict = verdict
        self._key = key

    async def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        response: BoltResponse = await super().__call__(*args, **kwargs)
        if not await self._verdict:
            log.info("duplicate delivery ignored", extra={"event": "duplicate_delivery", "key": self._key})
            raise DuplicateDelivery(self._key)
        return response


def _consume_failure(verdict: asyncio.Future[bool]) -> None:
    if not verdict.cancelled() and verdict.exception() is not None:
        log.debug("delivery record failed", extra={"event": "delivery_record_failed"})


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
    async def drop_redeliveries(body: dict[str, Any], context: AsyncBoltContext, next: Any) -> None:
        """A re-delivered command or click (Slack retry, network replay) is acknowledged and ignored.

        The record lives in the store, so it holds whichever replica gets each delivery. It is written while
        the listener acknowledges (see `DeliveryAck`), not before: a burst of commands is then acknowledged
        at the pace of the event loop, not of one database write after another (bench/, BENCHMARKS.md).
        """
        key = delivery_key(body)
        if key is not None:
            verdict = asyncio.ensure_future(deps.store.first_delivery(key, utcnow()))
            verdict.add_done_callback(_consume_failure)  # a listener that never acks never reads it
            context["ack"] = DeliveryAck(verdict, key)
        await next()

    from bot.slack.listeners import actions, commands, modal

    commands.register(app, deps)
    actions.register(app, deps)
    modal.register(app, deps)
    return app
