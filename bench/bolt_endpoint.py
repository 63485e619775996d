"""The framework floor: a Bolt app (as the bot builds it: HTTP mode, `process_before_response=False`) whose only
listener acknowledges `/unlock-nodes` and does nothing else — no database, no follow-up work.

Between the bare endpoint and the bot, it shows how much of the bot's ack latency Bolt itself costs (request
parsing, the middleware chain, and its 10 ms poll for the listener's `ack()`). The signing secret comes from
`SLACK_SIGNING_SECRET`; authorization is a fixed result, so it calls no Slack API.
"""

from __future__ import annotations

import logging
from typing import Any

from common import endpoint_app, serve_endpoint
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response


def create_app(signing_secret: str) -> Starlette:
    async def authorize(**kwargs: Any) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=None, team_id="T0SANDBOX", bot_token="xoxb-floor", bot_user_id="U0FLOOR")

    bolt = AsyncApp(
        signing_secret=signing_secret,
        authorize=authorize,
        process_before_response=False,
        logger=logging.getLogger("bolt-floor"),
    )

    @bolt.command("/unlock-nodes")
    async def on_command(ack: AsyncAck) -> None:
        await ack()

    handler = AsyncSlackRequestHandler(bolt)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    return endpoint_app(events)


def main() -> None:
    serve_endpoint(create_app, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
