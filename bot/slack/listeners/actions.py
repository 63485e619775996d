"""Approve / Deny / Cancel / Retry-failed buttons: ack, then let the workflow decide; refusals are private."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.slack import ids
from bot.slack.app import SlackDeps
from bot.workflow import Reply

log = logging.getLogger(__name__)


def register(app: AsyncApp, deps: SlackDeps) -> None:
    workflow = deps.workflow

    def button(decide: Callable[[str, str, dict[str, Any]], Awaitable[Reply]]) -> Any:
        async def listener(ack: AsyncAck, body: dict[str, Any]) -> None:
            await ack()
            user_id = body["user"]["id"]
            channel_id = (body.get("channel") or {}).get("id") or body.get("container", {}).get("channel_id", "")
            request_id = str(body["actions"][0].get("value") or "")
            try:
                reply = await decide(request_id, user_id, body)
            except Exception:
                log.exception("button failed", extra={"event": "action_failed", "request_id": request_id})
                reply = Reply(
                    ":boom: Something went wrong handling that click; the request's message shows its real state.",
                    ok=False,
                )
            if not reply.ok:
                await workflow.notifier.whisper(channel_id, user_id, reply.text)

        return listener

    app.action(ids.APPROVE_ACTION)(button(lambda rid, uid, _: workflow.approve(rid, uid)))
    app.action(ids.DENY_ACTION)(button(lambda rid, uid, _: workflow.deny(rid, uid)))
    app.action(ids.CANCEL_ACTION)(button(lambda rid, uid, _: workflow.cancel(rid, uid)))
    app.action(ids.RETRY_FAILED_ACTION)(
        button(
            lambda rid, uid, body: workflow.retry_failed(rid, team_id=body.get("team", {}).get("id", ""), user_id=uid)
        )
    )
