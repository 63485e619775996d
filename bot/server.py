"""HTTP mode: Starlette serving `/slack/events`, `/healthz`, `/readyz` and `/metrics`.

`/healthz` answers whenever the event loop does (a liveness probe: only a wedged process fails it);
`/readyz` answers 200 only while the settings are complete and the database answers at the expected schema
(a readiness probe: a replica that cannot record a decision should get no Slack traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.config import Mode, Settings
from bot.metrics import CONTENT_TYPE
from bot.runtime import Runtime
from bot.store import Store
from bot.store.schema import head_revision

log = logging.getLogger(__name__)

# A probe that waits longer than this learns nothing more: a database this slow is not ready.
READY_TIMEOUT_SECONDS = 3.0


async def readiness(settings: Settings, store: Store, mode: Mode, head: str) -> dict[str, str]:
    """What keeps this replica from serving, by check (`settings`, `database`); empty when ready.

    Reasons are safe to show on an unauthenticated endpoint: variable names and error classes, never values.
    """
    problems: dict[str, str] = {}
    found = settings.problems(mode)
    if found:
        problems["settings"] = "; ".join(found)
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            current = await store.current_revision()
    except TimeoutError:
        problems["database"] = f"no answer within {READY_TIMEOUT_SECONDS:g}s"
    except Exception as exc:
        problems["database"] = f"unavailable ({type(exc).__name__})"
    else:
        if current != head:
            problems["database"] = f"schema is at {current or 'nothing'}, expected {head}: run `unlock-bot db upgrade`"
    return problems


def create_app(settings: Settings, mode: Mode = Mode.HTTP) -> Starlette:
    """The ASGI app; everything that needs the event loop is built in its lifespan."""
    holder: dict[str, Runtime] = {}
    head = head_revision()  # read the migrations once, not on every probe
    last_problems: dict[str, dict[str, str]] = {"seen": {}}

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
        problems = await readiness(runtime.settings, runtime.store, mode, head)
        if problems != last_problems["seen"]:  # log changes, not every probe
            last_problems["seen"] = problems
            if problems:
                log.warning("not ready", extra={"event": "not_ready", "problems": problems})
            else:
                log.info("ready again", extra={"event": "ready"})
        if problems:
            return JSONResponse({"status": "unavailable", **problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        runtime = holder.get("runtime")
        if runtime is None:
            return Response("starting\n", status_code=503, media_type="text/plain")
        return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
