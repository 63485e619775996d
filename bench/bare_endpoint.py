"""The ack-latency baseline: the least a Slack endpoint can do — verify the v0 signature and answer 200.

Served by uvicorn with the same options as `unlock-bot serve`, in a process of its own, so the ratio bot/bare
isolates what the bot adds (Bolt, the delivery dedupe write, parsing, listener dispatch) from HTTP serving.
The signing secret comes from `SLACK_SIGNING_SECRET`.
"""

from __future__ import annotations

from common import endpoint_app, serve_endpoint
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response


def create_app(signing_secret: str) -> Starlette:
    verifier = SignatureVerifier(signing_secret)

    async def events(request: Request) -> Response:
        body = await request.body()
        if not verifier.is_valid_request(body, dict(request.headers)):
            return Response(status_code=401)
        return Response(status_code=200)

    return endpoint_app(events)


def main() -> None:
    serve_endpoint(create_app, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
