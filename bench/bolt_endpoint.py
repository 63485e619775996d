"""The framework floor: a Bolt app (as the bot builds it: HTTP mode, `process_before_response=False`) whose only
listener acknowledges `/unlock-nodes` and does nothing else — no database, no follow-up work.

Between the bare endpoint and the bot, it shows how much of the bot's ack latency Bolt itself costs (request
parsing, the middleware chain, and its 10 ms poll for the listener's `ack()`). The signing secret comes from
`SLACK_SIGNING_SECRET`; authorization is a fixed result, so it calls no Slack API.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


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

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/slack/events", events, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(os.environ["SLACK_SIGNING_SECRET"])
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, proxy_headers=True)


if __name__ == "__main__":
    main()
