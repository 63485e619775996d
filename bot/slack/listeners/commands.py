"""`/unlock-nodes …`: parse, ack within Slack's 3 seconds, then hand the request to the workflow."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.requests import CommandError, HelpCommand, OpenModal, parse_command, usage
from bot.slack.app import SlackDeps
from bot.slack.listeners.modal import open_modal
from bot.slack.views import help_text

log = logging.getLogger(__name__)


def register(app: AsyncApp, deps: SlackDeps) -> None:
    @app.command(deps.command)
    async def on_unlock_command(
        ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        user_id = command["user_id"]
        channel_id = command["channel_id"]
        try:
            parsed = parse_command(command.get("text") or "", command=deps.command)
        except CommandError as exc:
            await ack(response_type="ephemeral", text=f":warning: {exc}\n\n{usage(deps.command)}")
            return
        if isinstance(parsed, HelpCommand):
            await ack()
            permissions = await deps.authorizer.describe(user_id, channel_id)
            await respond(text=help_text(usage(deps.command), permissions), response_type="ephemeral")
            return
        if isinstance(parsed, OpenModal):
            await ack()
            await open_modal(client, deps, trigger_id=command["trigger_id"], channel_id=channel_id, user_id=user_id)
            return
        await ack()
        try:
            reply = await deps.workflow.submit(
                parsed, team_id=command.get("team_id", ""), channel_id=channel_id, user_id=user_id
            )
        except Exception:
            log.exception("request failed", extra={"event": "submit_failed", "user_id": user_id})
            await respond(
                text=":boom: Something went wrong while creating your request; nothing was unlocked. "
                "Please try again, and tell the bot's operators if it keeps happening.",
                response_type="ephemeral",
            )
            return
        await respond(text=reply.text, response_type="ephemeral")
