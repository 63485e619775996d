"""The Slack side of the workflow's `Notifier` port: posts and edits messages through the Web API."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.requests import NodeResult, UnlockRequest
from bot.slack import views
from bot.workflow import AnnounceFailed, Preview

log = logging.getLogger(__name__)


class SlackNotifier:
    """Draws requests in their channel and thread with `views`, sends them with an `AsyncWebClient`."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def announce(self, request: UnlockRequest, preview: Preview | None) -> str:
        message = views.request_message(request, preview=preview)
        try:
            response = await self.client.chat_postMessage(
                channel=request.channel_id, text=message.text, blocks=message.blocks, unfurl_links=False
            )
        except SlackApiError as exc:
            raise AnnounceFailed(str(exc.response.get("error") or "Slack API error")) from exc
        return str(response["ts"])

    async def refresh(
        self, request: UnlockRequest, results: Sequence[NodeResult] = (), preview: Preview | None = None
    ) -> None:
        if request.message_ts is None:
            log.warning(
                "request has no message to update",
                extra={"event": "refresh_skipped", "request_id": request.id},
            )
            return
        message = views.request_message(request, preview=preview, results=results)
        await self.client.chat_update(
            channel=request.channel_id, ts=request.message_ts, text=message.text, blocks=message.blocks
        )

    async def thread_note(self, request: UnlockRequest, text: str) -> None:
        await self.client.chat_postMessage(channel=request.channel_id, thread_ts=request.message_ts, text=text)

    async def post_results(
        self, request: UnlockRequest, results: Sequence[NodeResult], *, problems: Sequence[str], resumed: bool
    ) -> None:
        for message in views.result_messages(request, results, problems=problems, resumed=resumed):
            await self.client.chat_postMessage(
                channel=request.channel_id,
                thread_ts=request.message_ts,
                text=message.text,
                blocks=message.blocks,
            )

    async def whisper(self, channel_id: str, user_id: str, text: str) -> None:
        await self.client.chat_postEphemeral(channel=channel_id, user=user_id, text=text)
