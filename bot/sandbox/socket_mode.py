"""A local Socket Mode: `apps.connections.open`, the WebSocket Slack pushes envelopes through, and the acks.

Slack's side of Socket Mode, as slack_sdk's clients and Slack's documentation describe it:

1. The app calls the Web API method `apps.connections.open` with its app-level token (`xapp-…`) and gets a
   one-use URL, `wss://…/link/?ticket=…&app_id=…`. Here the Web API stand-in (`SlackStandIn`) answers it,
   through `SlackStandIn.plug_method`, with a `ws://127.0.0.1:PORT/link/?ticket=…` URL of this server.
2. On connecting, the app gets `{"type": "hello", "num_connections": …, "connection_info": {"app_id": …}}`.
3. Each slash command or interaction is one envelope, `{"envelope_id", "type": "slash_commands" |
   "interactive", "payload", "accepts_response_payload"}`, sent to one of the app's connections; the
   payload is what HTTP mode would have POSTed (the command's form fields, the interaction's `payload` JSON).
4. The app acknowledges with `{"envelope_id": …, "payload": {…}}` (payload optional); Slack applies that
   payload as it would an HTTP response body, and shows `operation_timeout` when none came within 3 seconds.
5. Slack asks for a reconnect from time to time with `{"type": "disconnect", "reason": "refresh_requested"}`.

`SocketModeStandIn` is that server, on a loopback port in a thread of its own (like the other stand-ins, so
a test's blocking waits cannot stall it). `SocketModeDriver` plays users over it: the same calls as the
HTTP `SlackDriver`, building the very same payloads, each returning the app's ack payload.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bot.sandbox.driver import SlackDriver
from bot.sandbox.records import APP_ID, SlackError
from bot.sandbox.webapi import SlackStandIn

DEFAULT_APP_TOKEN = "xapp-1-A0SANDBOX-1-sandbox"  # noqa: S105 (a fake app-level token for the stand-in)
SLACK_ACK_DEADLINE = 3.0  # seconds Slack waits for an ack before telling the user "operation_timeout"
LINK_PATH = "/link/"

# Interactions whose ack may carry a response (options, modal errors/updates); like slash commands.
_RESPONSE_PAYLOAD_TYPES = frozenset({"view_submission", "block_suggestion"})


class AckTimeout(TimeoutError):
    """The app did not acknowledge an envelope in time (Slack shows the user `operation_timeout`)."""


@dataclass
class Envelope:
    """One envelope as sent to the app."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    connection_id: str
    sent_at: float

    def to_wire(self) -> dict[str, Any]:
        return {
            "envelope_id": self.envelope_id,
            "payload": self.payload,
            "type": self.type,
            "accepts_response_payload": self.accepts_response_payload,
        }


@dataclass
class SocketAck:
    """An acknowledgement the app sent back: `{"envelope_id": …, "payload": …}`, and how long it took."""

    envelope_id: str
    payload: dict[str, Any] | None
    elapsed: float
    connection_id: str
    message: dict[str, Any]


@dataclass
class LinkConnection:
    """One WebSocket connection the app opened, from hello to close."""

    id: str
    ticket: str
    opened_at: float
    closed_at: float | None = None
    close_code: int | None = None

    @property
    def open(self) -> bool:
        return self.closed_at is None


def envelope_for_http_body(body: bytes) -> tuple[str, dict[str, Any]]:
    """The Socket Mode envelope type and payload for what HTTP mode would POST (form-encoded body).

    A slash command's payload is its form fields as a JSON object (all strings, as Slack sends them); an
    interaction's is the decoded `payload=<JSON>` field.
    """
    fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    if "command" in fields:
        return "slash_commands", fields
    if "payload" in fields:
        payload = json.loads(fields["payload"])
        if isinstance(payload, dict):
            return "interactive", payload
    raise ValueError("neither a slash command nor an interaction payload")


def accepts_response_payload(envelope_type: str, payload: Mapping[str, Any]) -> bool:
    """Whether Slack uses a payload in the ack: commands, modal submissions and options requests do."""
    return envelope_type == "slash_commands" or payload.get("type") in _RESPONSE_PAYLOAD_TYPES


class SocketModeStandIn:
    """Slack's Socket Mode endpoint on loopback: hands out link URLs, pushes envelopes, records acks.

    `start()` plugs `apps.connections.open` into `slack` (the Web API stand-in the app's `SLACK_API_URL`
    points at) and starts the WebSocket server; `stop()` closes every connection (code 1001) and the server.
    """

    def __init__(
        self,
        slack: SlackStandIn,
        *,
        app_token: str = DEFAULT_APP_TOKEN,
        app_id: str = APP_ID,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.slack = slack
        self.app_token = app_token
        self.app_id = app_id
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._tickets: set[str] = set()
        self._connections: list[LinkConnection] = []
        self._envelopes: list[Envelope] = []
        self._acks: list[SocketAck] = []
        self._stray: list[str] = []
        self._open: dict[str, ServerConnection] = {}
        self._pending: dict[str, asyncio.Future[SocketAck]] = {}
        self._round_robin = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._running = False
        self._startup_error: BaseException | None = None

    def __repr__(self) -> str:  # never show the app token
        return f"SocketModeStandIn(url={self.url!r})"

    # ----- lifecycle --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{LINK_PATH}"

    def start(self, timeout: float = 10.0) -> SocketModeStandIn:
        """Serve on `host:port` (a free port when 0) in a background thread; return once listening."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="socket-mode", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"Socket Mode stand-in did not start within {timeout}s")
        if self._startup_error is not None:
            raise RuntimeError("Socket Mode stand-in failed to start") from self._startup_error
        self.slack.plug_method("apps.connections.open", self._connections_open, self._check_app_token)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> SocketModeStandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            server: Server = await serve(self._serve_link, self.host, self.port, process_request=self._check_ticket)
        except BaseException as exc:
            self._startup_error = exc
            self._started.set()
            raise
        async with server:
            self.port = int(server.sockets[0].getsockname()[1])
            self._running = True
            self._started.set()
            await self._stopping.wait()
            self._running = False
        for future in self._pending.values():
            future.cancel()

    # ----- apps.connections.open (called by the Web API stand-in, in its thread) --------------------------

    def _check_app_token(self, token: str) -> str | None:
        if not token.startswith("xapp-"):
            return "not_allowed_token_type"  # what Slack answers a bot or user token here
        return None if secrets.compare_digest(token, self.app_token) else "invalid_auth"

    def _connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self._running:
            raise SlackError("internal_error")
        ticket = secrets.token_hex(16)
        with self._lock:
            self._tickets.add(ticket)
        return {"url": f"{self.url}?ticket={ticket}&app_id={self.app_id}"}

    # ----- the WebSocket side (in the server's thread) -----------------------------------------------------

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        """A link URL is good for one connection, like Slack's."""
        parts = urlsplit(request.path)
        ticket = (parse_qs(parts.query).get("ticket") or [""])[0]
        with self._lock:
            known = ticket in self._tickets
            self._tickets.discard(ticket)
        if parts.path.rstrip("/") != LINK_PATH.rstrip("/"):
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if not known:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid or used ticket\n")
        return None

    async def _serve_link(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        ticket = (parse_qs(urlsplit(connection.request.path).query).get("ticket") or [""])[0]
        record = LinkConnection(id=f"link-{uuid.uuid4().hex[:8]}", ticket=ticket, opened_at=time.time())
        with self._lock:
            self._connections.append(record)
            self._open[record.id] = connection
            count = len(self._open)
        try:
            await connection.send(
                json.dumps(
                    {
                        "type": "hello",
                        "num_connections": count,
                        "debug_info": {
                            "host": "applink-sandbox",
                            "build_number": 1,
                            "approximate_connection_time": 18060,
                        },
                        "connection_info": {"app_id": self.app_id},
                    }
                )
            )
            async for raw in connection:
                self._on_message(record, raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._open.pop(record.id, None)
                record.closed_at = time.time()
                record.close_code = connection.close_code

    def _on_message(self, record: LinkConnection, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        future = self._pending.pop(envelope_id, None) if isinstance(envelope_id, str) else None
        if future is None or future.done() or not isinstance(message, dict):
            with self._lock:
                self._stray.append(raw)
            return
        payload = message.get("payload")
        with self._lock:
            sent = next((e for e in reversed(self._envelopes) if e.envelope_id == envelope_id), None)
            ack = SocketAck(
                envelope_id=str(envelope_id),
                payload=payload if isinstance(payload, dict) else None,
                elapsed=time.time() - sent.sent_at if sent else 0.0,
                connection_id=record.id,
                message=message,
            )
            self._acks.append(ack)
        future.set_result(ack)

    async def _send(
        self, envelope_type: str, payload: dict[str, Any], wait: float
    ) -> tuple[Envelope, SocketAck | None]:
        connection_id, connection = await self._pick_connection(wait)
        envelope = Envelope(
            envelope_id=str(uuid.uuid4()),
            type=envelope_type,
            payload=copy.deepcopy(payload),
            accepts_response_payload=accepts_response_payload(envelope_type, payload),
            connection_id=connection_id,
            sent_at=time.time(),
        )
        future: asyncio.Future[SocketAck] = asyncio.get_running_loop().create_future()
        self._pending[envelope.envelope_id] = future
        with self._lock:
            self._envelopes.append(envelope)
        try:
            await connection.send(json.dumps(envelope.to_wire()))
            return envelope, await asyncio.wait_for(future, wait)
        except (TimeoutError, ConnectionClosed):
            return envelope, None
        finally:
            self._pending.pop(envelope.envelope_id, None)

    async def _pick_connection(self, wait: float) -> tuple[str, ServerConnection]:
        """One of the app's open connections, in turn (Slack spreads envelopes over them)."""
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                live = sorted(self._open.items())
            if live:
                return live[next(self._round_robin) % len(live)]
            if time.monotonic() >= deadline:
                raise ConnectionError("the app has no open Socket Mode connection")
            await asyncio.sleep(0.01)

    async def _broadcast(self, message: dict[str, Any]) -> int:
        with self._lock:
            connections = list(self._open.values())
        for connection in connections:
            try:
                await connection.send(json.dumps(message))
            except ConnectionClosed:
                continue
        return len(connections)

    async def _in_server_loop(self, coro: Any) -> Any:
        if self._loop is None:
            raise RuntimeError("the Socket Mode stand-in is not running")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    # ----- what tests and the driver use (from any thread or event loop) -----------------------------------

    async def send(
        self,
        envelope_type: str,
        payload: dict[str, Any],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 (how long to wait for the app's ack, as Slack does)
    ) -> tuple[Envelope, SocketAck | None]:
        """Push one envelope to the app and wait up to `timeout` for its ack (None: no ack came).

        Raises ConnectionError when the app has had no open connection for `timeout` seconds.
        """
        result: tuple[Envelope, SocketAck | None] = await self._in_server_loop(
            self._send(envelope_type, payload, timeout)
        )
        return result

    async def request_refresh(self) -> int:
        """Ask every connection to reconnect, as Slack does now and then; returns how many were asked."""
        count: int = await self._in_server_loop(
            self._broadcast(
                {
                    "type": "disconnect",
                    "reason": "refresh_requested",
                    "debug_info": {"host": "applink-sandbox"},
                }
            )
        )
        return count

    async def wait_connected(self, count: int = 1, timeout: float = 10.0) -> list[LinkConnection]:  # noqa: ASYNC109
        """Wait until the app holds at least `count` open connections; return the open ones."""
        deadline = time.monotonic() + timeout
        while True:
            live = [c for c in self.connections() if c.open]
            if len(live) >= count:
                return live
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(live)} Socket Mode connection(s) open after {timeout}s, wanted {count}")
            await asyncio.sleep(0.02)

    def connections(self) -> list[LinkConnection]:
        with self._lock:
            return [copy.copy(c) for c in self._connections]

    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return [copy.deepcopy(e) for e in self._envelopes]

    def acks(self) -> list[SocketAck]:
        with self._lock:
            return [copy.deepcopy(a) for a in self._acks]

    def stray_messages(self) -> list[str]:
        """Messages from the app that acknowledged nothing we were waiting for (late, unknown, malformed)."""
        with self._lock:
            return list(self._stray)

    def driver(self, standin_url: str, **kwargs: Any) -> SocketModeDriver:
        """A driver playing users over this link; `standin_url` is the Web API stand-in's base URL."""
        return SocketModeDriver(self, standin_url, **kwargs)


class _LinkDriver(SlackDriver):
    """The HTTP driver's payloads, delivered as Socket Mode envelopes instead of signed POSTs."""

    def __init__(self, link: SocketModeStandIn, standin_url: str, *, ack_timeout: float, **kwargs: Any) -> None:
        # Socket Mode has no request URL and no signature; the HTTP-only parts of SlackDriver go unused.
        super().__init__(f"{standin_url.rstrip('/')}/no-request-url", secrets.token_hex(16), standin_url, **kwargs)
        self.link = link
        self.ack_timeout = ack_timeout
        self.last_envelope: Envelope | None = None
        self.last_ack: SocketAck | None = None

    async def _deliver(self, body: bytes) -> tuple[httpx.Response, float]:
        envelope_type, payload = envelope_for_http_body(body)
        started = time.monotonic()
        self.last_envelope, self.last_ack = await self.link.send(envelope_type, payload, timeout=self.ack_timeout)
        ack = self.last_ack
        if ack is None:  # Slack gives up after 3 seconds whatever the app does later
            return httpx.Response(200), max(time.monotonic() - started, SLACK_ACK_DEADLINE + 0.001)
        response = httpx.Response(200, json=ack.payload) if ack.payload is not None else httpx.Response(200)
        return response, ack.elapsed

    async def send_raw(self, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        raise NotImplementedError("Socket Mode has no request URL: send envelopes with SocketModeStandIn.send")


class SocketModeDriver:
    """Plays users over Socket Mode: `SlackDriver`'s calls and payloads, each returning the app's ack payload.

    The ack payload is None when the app acknowledged with an empty ack; `AckTimeout` is raised when no ack
    came within `ack_timeout` (after Slack's `operation_timeout` was shown to the user in the stand-in).
    """

    def __init__(self, link: SocketModeStandIn, standin_url: str, *, ack_timeout: float = 10.0, **kwargs: Any) -> None:
        self._driver = _LinkDriver(link, standin_url, ack_timeout=ack_timeout, **kwargs)

    def __repr__(self) -> str:
        return f"SocketModeDriver(link={self._driver.link!r})"

    async def __aenter__(self) -> SocketModeDriver:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._driver.aclose()

    @property
    def last_envelope(self) -> Envelope | None:
        return self._driver.last_envelope

    @property
    def last_ack(self) -> SocketAck | None:
        return self._driver.last_ack

    def _ack_payload(self) -> dict[str, Any] | None:
        ack = self._driver.last_ack
        if ack is None:
            envelope = self._driver.last_envelope
            kind = envelope.type if envelope else "envelope"
            raise AckTimeout(f"the app did not acknowledge the {kind} envelope within {self._driver.ack_timeout}s")
        return ack.payload

    async def command(
        self, user_id: str, channel_id: str, text: str, command: str = "/unlock-nodes"
    ) -> dict[str, Any] | None:
        """A slash command (a `slash_commands` envelope)."""
        await self._driver.command(user_id, channel_id, text, command)
        return self._ack_payload()

    async def click(
        self,
        user_id: str,
        channel_id: str,
        message_ts: str,
        action_id: str,
        value: str,
        *,
        block_id: str | None = None,
        ephemeral: bool = False,
    ) -> dict[str, Any] | None:
        """A click on a button in a message (an `interactive` envelope with a `block_actions` payload)."""
        await self._driver.click(
            user_id, channel_id, message_ts, action_id, value, block_id=block_id, ephemeral=ephemeral
        )
        return self._ack_payload()

    async def submit_view(
        self, user_id: str, view: Mapping[str, Any], values: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Any] | None:
        """A modal submission (`view_submission`); the ack payload may carry `response_action`."""
        await self._driver.submit_view(user_id, view, values)
        return self._ack_payload()

    async def options(
        self,
        user_id: str,
        action_id: str,
        value: str,
        view: Mapping[str, Any] | None,
        *,
        block_id: str | None = None,
        channel_id: str | None = None,
        message_ts: str | None = None,
    ) -> dict[str, Any] | None:
        """Typing into an external select (`block_suggestion`); the ack payload holds the options."""
        await self._driver.options(
            user_id, action_id, value, view, block_id=block_id, channel_id=channel_id, message_ts=message_ts
        )
        return self._ack_payload()

    async def shortcut(self, user_id: str, callback_id: str) -> dict[str, Any] | None:
        """A global shortcut (`shortcut` payload in an `interactive` envelope)."""
        await self._driver.shortcut(user_id, callback_id)
        return self._ack_payload()

    async def opened_view(self, user_id: str) -> dict[str, Any] | None:
        return await self._driver.opened_view(user_id)

    async def fetch_message(self, channel_id: str, ts: str, *, user: str | None = None) -> dict[str, Any] | None:
        return await self._driver.fetch_message(channel_id, ts, user=user)
