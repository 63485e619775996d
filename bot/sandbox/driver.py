"""Plays Slack's side of the conversation: signed slash commands, clicks, modal submissions to the bot.

The payloads are built field for field like Slack's (form-encoded commands, `payload=<JSON>` for
interactivity, a fresh `trigger_id` and `response_url` per request, the verification-token placeholder),
and signed with the v0 scheme, so the bot's real Bolt verification and parsing run. What the bot answers in
its HTTP acknowledgement is reported to the stand-in, which shows it the way Slack would (an ephemeral for
a command, a closed or updated modal for a submission, "operation_timeout" after 3 seconds).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import string
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from bot.sandbox.records import (
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    TEAM_DOMAIN,
    TEAM_ID,
    ResponseContext,
    mint_response_token,
    mint_trigger_id,
)

VERIFICATION_TOKEN = "verification-token-placeholder"  # noqa: S105 (Slack's deprecated field, a placeholder)
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
FORM = "application/x-www-form-urlencoded"


def _slack_block_id() -> str:
    """Slack generates short random block IDs for blocks that were sent without one."""
    return "".join(secrets.choice(string.ascii_letters + string.digits + "=+/") for _ in range(4))


def _find_element(blocks: Any, action_id: str) -> tuple[str | None, dict[str, Any] | None]:
    """The block_id and element of `action_id` in a message's or modal's blocks."""
    for block in blocks or []:
        if not isinstance(block, dict):
            continue
        candidates = list(block.get("elements") or [])
        for key in ("accessory", "element"):
            if isinstance(block.get(key), dict):
                candidates.append(block[key])
        for element in candidates:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return block.get("block_id"), element
    return None, None


def _normalise_values(values: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """`view.state.values`: a bare string becomes a `plain_text_input` value, dicts pass through."""
    out: dict[str, dict[str, Any]] = {}
    for block_id, actions in values.items():
        out[block_id] = {}
        for action_id, leaf in actions.items():
            if isinstance(leaf, dict):
                out[block_id][action_id] = copy.deepcopy(leaf)
            else:
                out[block_id][action_id] = {"type": "plain_text_input", "value": leaf}
    return out


class SlackDriver:
    """Sends what Slack sends to `bot_url` (default path `/slack/events`), signed with `signing_secret`."""

    def __init__(
        self,
        bot_url: str,
        signing_secret: str,
        standin_url: str,
        team_id: str = TEAM_ID,
        *,
        user_names: Mapping[str, str] | None = None,
        channel_names: Mapping[str, str] | None = None,
        report_acks: bool = True,
        timeout: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(bot_url)
        self.bot_url = bot_url if parts.path not in ("", "/") else bot_url.rstrip("/") + "/slack/events"
        self.standin_url = standin_url.rstrip("/")
        self.team_id = team_id
        self.user_names = dict(user_names or {})
        self.channel_names = dict(channel_names or {})
        self.report_acks = report_acks
        self.clock = clock
        self._secret = signing_secret.encode()
        self._http = httpx.AsyncClient(timeout=timeout)
        self._last_response_url: dict[str, str] = {}
        self._last_trigger_id: dict[str, str] = {}
        self.last_payload: dict[str, Any] | None = None
        self._last_body: bytes | None = None

    def __repr__(self) -> str:  # never show the signing secret
        return f"SlackDriver(bot_url={self.bot_url!r}, standin_url={self.standin_url!r})"

    async def __aenter__(self) -> SlackDriver:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ----- signing and sending ---------------------------------------------------------------------------

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Slack's v0 signature headers for `body` (timestamp defaults to now)."""
        ts = str(int(self.clock()) if timestamp is None else timestamp)
        digest = hmac.new(self._secret, b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}

    async def send_raw(self, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST exactly these bytes and headers (forged, stale or replayed requests)."""
        return await self._http.post(self.bot_url, content=body, headers=dict(headers))

    async def _deliver(self, body: bytes) -> tuple[httpx.Response, float]:
        """Send one payload (as HTTP mode would POST it); the ack and how long it took.

        The one transport seam: bot.sandbox.socket_mode overrides it to send the same payloads as envelopes.
        """
        self._last_body = body
        headers = {"Content-Type": FORM, "User-Agent": USER_AGENT, **self.sign(body)}
        started = time.monotonic()
        response = await self.send_raw(body, headers)
        return response, time.monotonic() - started

    async def redeliver(self, retry_num: int = 1, reason: str = "http_timeout") -> httpx.Response:
        """Resend the last body unchanged (freshly signed) with Slack's retry headers, as Events API does."""
        if self._last_body is None:
            raise RuntimeError("nothing was delivered yet")
        headers = {
            "Content-Type": FORM,
            "User-Agent": USER_AGENT,
            "X-Slack-Retry-Num": str(retry_num),
            "X-Slack-Retry-Reason": reason,
            **self.sign(self._last_body),
        }
        return await self.send_raw(self._last_body, headers)

    async def _report(
        self,
        kind: str,
        response: httpx.Response,
        elapsed: float,
        *,
        user: str,
        channel: str | None = None,
        view_id: str | None = None,
        command: str | None = None,
    ) -> None:
        """Tell the stand-in what the bot acknowledged, so it shows what Slack would show."""
        if not self.report_acks:
            return
        body: dict[str, Any] | None = None
        if response.content:
            try:
                parsed = response.json()
                body = parsed if isinstance(parsed, dict) else {"text": response.text}
            except ValueError:
                body = {"text": response.text}
        report = {
            "kind": kind,
            "user": user,
            "channel": channel,
            "status": response.status_code,
            "body": body,
            "elapsed": elapsed,
            "view_id": view_id,
            "command": command,
        }
        result = await self._http.post(f"{self.standin_url}/_standin/acks", json=report)
        result.raise_for_status()

    # ----- payload pieces --------------------------------------------------------------------------------

    def _username(self, user_id: str) -> str:
        return self.user_names.get(user_id, user_id.lower())

    def _user(self, user_id: str) -> dict[str, Any]:
        name = self._username(user_id)
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def _team(self) -> dict[str, Any]:
        return {"id": self.team_id, "domain": TEAM_DOMAIN}

    def _channel_name(self, channel_id: str) -> str:
        if channel_id in self.channel_names:
            return self.channel_names[channel_id]
        if channel_id.startswith("D"):
            return "directmessage"
        return "privategroup" if channel_id.startswith("G") else channel_id.lower()

    def _new_response_url(
        self, user_id: str, channel_id: str, message_ts: str | None = None, ephemeral: bool = False
    ) -> str:
        ctx = ResponseContext(self.team_id, channel_id, user_id, message_ts, ephemeral, int(self.clock()))
        url = f"{self.standin_url}/response/{mint_response_token(ctx)}"
        self._last_response_url[user_id] = url
        return url

    def _new_trigger_id(self, user_id: str) -> str:
        trigger_id = mint_trigger_id(user_id, self.clock())
        self._last_trigger_id[user_id] = trigger_id
        return trigger_id

    def last_response_url(self, user_id: str) -> str | None:
        """The `response_url` of the latest request this user made (to test the 5-use limit, say)."""
        return self._last_response_url.get(user_id)

    def last_trigger_id(self, user_id: str) -> str | None:
        return self._last_trigger_id.get(user_id)

    def _interactive_body(self, payload: dict[str, Any]) -> bytes:
        self.last_payload = payload
        return urlencode({"payload": json.dumps(payload)}).encode()

    # ----- reading the stand-in --------------------------------------------------------------------------

    async def fetch_message(self, channel_id: str, ts: str, *, user: str | None = None) -> dict[str, Any] | None:
        """A message (or, with `user`, that user's ephemeral) as Slack would put it in a payload."""
        if user is None:
            res = await self._http.get(f"{self.standin_url}/_standin/message", params={"channel": channel_id, "ts": ts})
            return dict(res.json()["message"]["slack"]) if res.status_code == 200 else None
        res = await self._http.get(f"{self.standin_url}/_standin/ephemerals", params={"user": user})
        res.raise_for_status()
        for eph in res.json()["ephemerals"]:
            if eph["ts"] == ts:
                return dict(eph["slack"])
        return None

    async def opened_view(self, user_id: str) -> dict[str, Any] | None:
        """The view on top of the user's open modal stack in the stand-in, if any."""
        res = await self._http.get(f"{self.standin_url}/_standin/views", params={"user": user_id, "open": "1"})
        res.raise_for_status()
        views = res.json()["views"]
        return dict(views[-1]["view"]) if views else None

    # ----- what users do ---------------------------------------------------------------------------------

    async def command(self, user_id: str, channel_id: str, text: str, command: str = "/unlock-nodes") -> httpx.Response:
        """A slash command, form-encoded with Slack's fields and order."""
        fields = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel_id,
            "channel_name": self._channel_name(channel_id),
            "user_id": user_id,
            "user_name": self._username(user_id),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": self._new_response_url(user_id, channel_id),
            "trigger_id": self._new_trigger_id(user_id),
        }
        self.last_payload = dict(fields)
        response, elapsed = await self._deliver(urlencode(fields).encode())
        await self._report("command", response, elapsed, user=user_id, channel=channel_id, command=command)
        return response

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
    ) -> httpx.Response:
        """A click on a button (or a choice in a select) in a message: a `block_actions` payload.

        The message's current blocks are read from the stand-in, as Slack includes them; a second call
        with the same arguments is a double click: a new payload (new trigger_id, action_ts, response_url).
        """
        message = await self.fetch_message(channel_id, message_ts, user=user_id if ephemeral else None)
        found_block_id, element = _find_element((message or {}).get("blocks"), action_id)
        now = self.clock()
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block_id or found_block_id or _slack_block_id(),
            "type": (element or {}).get("type", "button"),
            "action_ts": f"{now:.6f}",
        }
        if action["type"] in ("static_select", "external_select", "overflow", "radio_buttons"):
            options = (element or {}).get("options") or []
            chosen = next((o for o in options if isinstance(o, dict) and o.get("value") == value), None)
            action["selected_option"] = chosen or {
                "text": {"type": "plain_text", "text": value},
                "value": value,
            }
        else:
            text = (element or {}).get("text") or {"type": "plain_text", "text": action_id, "emoji": True}
            action.update(text=copy.deepcopy(text), value=value)
            if element and "style" in element:
                action["style"] = element["style"]
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel_id,
                "is_ephemeral": ephemeral,
            },
            "trigger_id": self._new_trigger_id(user_id),
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": self._channel_name(channel_id)},
            "state": {"values": {}},
            "response_url": self._new_response_url(user_id, channel_id, message_ts, ephemeral),
            "actions": [action],
        }
        if not ephemeral:
            payload["message"] = message or {
                "type": "message",
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "app_id": APP_ID,
                "text": "",
                "ts": message_ts,
                "team": self.team_id,
            }
        response, elapsed = await self._deliver(self._interactive_body(payload))
        await self._report("block_actions", response, elapsed, user=user_id, channel=channel_id)
        return response

    def _complete_view(self, view: Mapping[str, Any], values: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """A view as Slack sends it back: its ids and hash plus the user's input in `state.values`."""
        view_id = str(view.get("id") or "V" + secrets.token_hex(5).upper())
        full: dict[str, Any] = {
            "id": view_id,
            "team_id": self.team_id,
            "type": "modal",
            "blocks": [],
            "private_metadata": "",
            "callback_id": "",
            "hash": f"{int(self.clock())}.{secrets.token_hex(4)}",
            "title": {"type": "plain_text", "text": "Modal", "emoji": True},
            "clear_on_close": False,
            "notify_on_close": False,
            "close": None,
            "submit": None,
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": APP_ID,
            "external_id": "",
            "app_installed_team_id": self.team_id,
            "bot_id": BOT_ID,
        }
        full.update(copy.deepcopy(dict(view)))
        full["state"] = {"values": values}
        return full

    async def submit_view(
        self, user_id: str, view: Mapping[str, Any], values: Mapping[str, Mapping[str, Any]]
    ) -> httpx.Response:
        """The user presses the modal's submit button: a `view_submission` payload.

        `values` is `view.state.values` (`{block_id: {action_id: {...}}}`); a plain string leaf stands for
        a `plain_text_input` with that value. `view` is best the stand-in's record (see `opened_view`).
        """
        full = self._complete_view(view, _normalise_values(values))
        payload = {
            "type": "view_submission",
            "team": self._team(),
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "trigger_id": self._new_trigger_id(user_id),
            "view": full,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        response, elapsed = await self._deliver(self._interactive_body(payload))
        await self._report("view_submission", response, elapsed, user=user_id, view_id=full["id"])
        return response

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
    ) -> httpx.Response:
        """The user types `value` into an external select: a `block_suggestion` payload."""
        payload: dict[str, Any] = {
            "type": "block_suggestion",
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "action_id": action_id,
            "block_id": block_id or _find_element((view or {}).get("blocks"), action_id)[0] or _slack_block_id(),
            "value": value,
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
        }
        if view is not None:
            full = self._complete_view(view, dict((view.get("state") or {}).get("values") or {}))
            payload["container"] = {"type": "view", "view_id": full["id"]}
            payload["view"] = full
        else:
            payload["container"] = {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel_id,
                "is_ephemeral": False,
            }
            payload["channel"] = {"id": channel_id, "name": self._channel_name(channel_id or "")}
        response, elapsed = await self._deliver(self._interactive_body(payload))
        await self._report("block_suggestion", response, elapsed, user=user_id, channel=channel_id)
        return response

    async def shortcut(self, user_id: str, callback_id: str) -> httpx.Response:
        """A global shortcut (from the ⚡ menu): `type: shortcut`, a trigger_id and no response_url."""
        user = self._user(user_id)
        del user["name"]  # global shortcut payloads carry id, username and team_id only
        payload = {
            "type": "shortcut",
            "token": VERIFICATION_TOKEN,
            "action_ts": f"{self.clock():.6f}",
            "team": self._team(),
            "user": user,
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": self._new_trigger_id(user_id),
        }
        response, elapsed = await self._deliver(self._interactive_body(payload))
        await self._report("shortcut", response, elapsed, user=user_id)
        return response
