"""The ack-latency baseline: the least a Slack endpoint can do — verify the v0 signature and answer 200.

Served by uvicorn with the same options as `unlock-bot serve`, in a process of its own, so the ratio bot/bare
isolates what the bot adds (Bolt, the delivery dedupe write, parsing, listener dispatch) from HTTP serving.
The signing secret comes from `SLACK_SIGNING_SECRET`.
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def create_app(signing_secret: str) -> Starlette:
    verifier = SignatureVerifier(signing_secret)

    async def events(request: Request) -> Response:
        body = await request.body()
        if not verifier.is_valid_request(body, dict(request.headers)):
            return Response(status_code=401)
        return Response(status_code=200)

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
    # The same uvicorn options `unlock-bot serve` uses (bot/cli.py).
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, proxy_headers=True)


if __name__ == "__main__":
    main()
