"""HTTP mode: Starlette serving `/slack/events`, `/healthz`, `/readyz` and `/metrics`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.config import Mode, Settings
from bot.runtime import Runtime

log = logging.getLogger(__name__)


def create_app(settings: Settings, mode: Mode = Mode.HTTP) -> Starlette:
    """The ASGI app; everything that needs the event loop is built in its lifespan."""
    holder: dict[str, Runtime] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await Runtime.create(settings, mode)
        holder["runtime"] = runtime
        app.state.runtime = runtime
        runtime.start_background()
        log.info("unlock-bot ready", extra={"event": "started", "mode": mode.value})
        try:
            yield
        finally:
            await runtime.close()

    async def slack_events(request: Request) -> Response:
        return await AsyncSlackRequestHandler(holder["runtime"].slack_app).handle(request)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        runtime = holder.get("runtime")
        if runtime is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        try:
            await runtime.store.ping()
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
