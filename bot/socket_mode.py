"""`unlock-bot serve --socket-mode`: the same Bolt app over Slack's WebSocket, plus the HTTP health endpoint.

Socket Mode suits a bot behind a firewall: it opens one outbound WebSocket per replica (the URL comes from
the Web API method `apps.connections.open`, so it follows `SLACK_API_URL`) and Slack pushes commands and
interactions through it. Everything else is HTTP mode's: the same `Runtime` (store, policy, ModelArts client,
background sweeps) and the same `AsyncApp`. Only `/healthz`, `/readyz` and `/metrics` are served over HTTP,
and `/readyz` says whether the WebSocket is connected.

We use slack_bolt's default async adapter (aiohttp-based `SocketModeClient`): aiohttp is already the Web API
client's transport, and the client reconnects by itself when Slack asks it to or when pings go unanswered.
SIGTERM and SIGINT close the WebSocket first (no new work arrives), then the health server, then the runtime;
the exit status is 0. Work in flight is covered by the execution lease, as after any crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn
from prometheus_client import Gauge
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.config import Mode, Settings
from bot.metrics import CONTENT_TYPE
from bot.runtime import Runtime
from bot.server import readiness
from bot.store.schema import head_revision

log = logging.getLogger(__name__)

# Answers to apps.connections.open that no retry can fix: the app-level token is wrong.
_FATAL_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "not_allowed_token_type", "token_revoked", "token_expired", "account_inactive"}
)


class HealthServer(uvicorn.Server):
    """uvicorn without its own signal handling: this process decides what SIGTERM and SIGINT do."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def create_health_app(runtime: Runtime, socket_client: AsyncBaseSocketModeClient) -> Starlette:
    """`/healthz` (the process lives), `/readyz` (HTTP mode's checks, plus: the WebSocket is connected), `/metrics`.

    A replica whose WebSocket is down gets no Slack traffic, so it is not ready, though it keeps reconnecting.
    """
    head = head_revision()  # read the migrations once, not on every probe
    connected_gauge = Gauge(
        "unlock_bot_socket_mode_connected",
        "1 while this replica's Socket Mode WebSocket is connected to Slack",
        registry=runtime.metrics.registry,
    )

    async def connected() -> bool:
        is_connected = bool(await socket_client.is_connected())
        connected_gauge.set(1 if is_connected else 0)
        return is_connected

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "mode": Mode.SOCKET.value})

    async def readyz(request: Request) -> Response:
        problems = await readiness(runtime.settings, runtime.store, Mode.SOCKET, head)
        if not await connected():
            problems["socket"] = "not connected to Slack (reconnecting)"
        if problems:
            return JSONResponse({"status": "unavailable", **problems}, status_code=503)
        return JSONResponse({"status": "ready", "socket": "connected"})

    async def metrics(request: Request) -> Response:
        await connected()
        return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the health port ourselves, so a port in use is an error we report, not uvicorn's `sys.exit`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run_socket_mode(settings: Settings, host: str, port: int) -> int:
    """Entry point of `unlock-bot serve --socket-mode`: run until SIGTERM/SIGINT; the exit status."""
    return asyncio.run(serve_socket_mode(settings, host=host, port=port))


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("stopping", extra={"event": "stopping", "signal": sig.name})
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def serve_socket_mode(settings: Settings, *, host: str, port: int, stop: asyncio.Event | None = None) -> int:
    """Run the bot over Socket Mode until `stop` is set (or SIGTERM/SIGINT arrives); the exit status."""
    stop = stop or asyncio.Event()
    with _stop_on_signals(stop):
        settings.require(Mode.SOCKET)
        assert settings.slack_app_token is not None  # guaranteed by require()
        try:
            sock = bind_socket(host, port)
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", host, port, exc.strerror, extra={"event": "bind_failed"})
            return 1
        try:
            runtime = await Runtime.create(settings, Mode.SOCKET)
        except BaseException:
            sock.close()
            raise
        handler: AsyncSocketModeHandler | None = None
        health: HealthServer | None = None
        health_task: asyncio.Task[None] | None = None
        connect_task: asyncio.Task[None] | None = None
        try:
            runtime.start_background()
            handler = AsyncSocketModeHandler(
                runtime.slack_app,
                app_token=settings.slack_app_token.get_secret_value(),
                logger=runtime.slack_app.logger,
            )
            health = HealthServer(
                uvicorn.Config(
                    create_health_app(runtime, handler.client), log_config=None, access_log=False, lifespan="off"
                )
            )
            health_task = asyncio.create_task(health.serve(sockets=[sock]))
            if not await _first_link(handler.client):
                return 1
            connect_task = asyncio.create_task(handler.connect_async())  # type: ignore[no-untyped-call]
            log.info(
                "unlock-bot started; connecting to Slack over Socket Mode",
                extra={"event": "started", "mode": Mode.SOCKET.value, "health": f"http://{host}:{port}/healthz"},
            )
            await stop.wait()
            return 0
        finally:
            if connect_task is not None and not connect_task.done():
                connect_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connect_task
            if handler is not None:
                with contextlib.suppress(Exception):
                    await handler.close_async()  # type: ignore[no-untyped-call]
            if health is not None and health_task is not None:
                health.should_exit = True
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await health_task
            sock.close()
            await runtime.close()
            log.info("stopped", extra={"event": "stopped", "mode": Mode.SOCKET.value})


async def _first_link(client: AsyncBaseSocketModeClient) -> bool:
    """Ask `apps.connections.open` for the first URL: a refused app token stops the bot with a clear message.

    Other failures (Slack unreachable, 5xx) are left to the client, which keeps trying to connect.
    """
    try:
        client.wss_uri = await client.issue_new_wss_url()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        if error in _FATAL_ERRORS:
            log.error(
                "Slack refused the app-level token (SLACK_APP_TOKEN): %s. It needs the connections:write scope, "
                "and Socket Mode enabled in the app's settings.",
                error,
                extra={"event": "socket_mode_refused", "error": error},
            )
            return False
        log.warning("apps.connections.open failed (%s); retrying", error, extra={"event": "socket_mode_retry"})
    except Exception as exc:
        log.warning(
            "apps.connections.open failed (%s); retrying", type(exc).__name__, extra={"event": "socket_mode_retry"}
        )
    return True
