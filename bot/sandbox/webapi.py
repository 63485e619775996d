"""A local Slack: the Web API methods unlock-bot calls, the `response_url` endpoint, and a record of both.

No machine that runs the tests, the demo or staging can reach slack.com, so this stand-in answers
slack_sdk's `AsyncWebClient` (pointed at it with `base_url=…/api/`) the way Slack does: same methods,
same body encodings (form or JSON, JSON-in-form for `blocks`/`view`), same `{"ok": false, "error": …}`
errors and the same 429 + `Retry-After` when rate limited. It also keeps what a person in the workspace
would see (channel messages, thread replies, ephemerals, modals) so tests and the demo transcript can
read it. Everything is guarded by one lock: uvicorn serves it from another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.sandbox.blockkit import (
    MESSAGE_BLOCK_LIMIT,
    MESSAGE_TEXT_LIMIT,
    validate_blocks,
    validate_modal,
)
from bot.sandbox.records import (
    APP_ID,
    BOT_ID,
    BOT_NAME,
    BOT_USER_ID,
    DEFAULT_BOT_TOKEN,
    TEAM_DOMAIN,
    TEAM_ID,
    USER_RE,
    Ack,
    ApiResult,
    Edit,
    Ephemeral,
    Message,
    OpenedView,
    RecordedCall,
    ResponseContext,
    ResponsePost,
    SlackError,
    mint_response_token,
    mint_trigger_id,
    parse_response_token,
    parse_trigger_id,
)

RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_TTL_SECONDS = 30 * 60
TRIGGER_TTL_SECONDS = 3.0
VIEW_STACK_LIMIT = 3

_CONVERSATION_RE = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_JSON_FIELDS = {
    "blocks": "invalid_blocks_format",
    "attachments": "invalid_attachments",
    "view": "invalid_arguments",
}

T = TypeVar("T")


__all__ = [
    "APP_ID",
    "BOT_ID",
    "BOT_NAME",
    "BOT_USER_ID",
    "DEFAULT_BOT_TOKEN",
    "TEAM_DOMAIN",
    "TEAM_ID",
    "Ack",
    "ApiResult",
    "Edit",
    "Ephemeral",
    "Message",
    "OpenedView",
    "RecordedCall",
    "ResponseContext",
    "ResponsePost",
    "SlackError",
    "SlackStandIn",
    "create_app",
    "mint_response_token",
    "mint_trigger_id",
    "parse_response_token",
    "parse_trigger_id",
]


@dataclass(frozen=True)
class PluggedMethod:
    """A Web API method answered by another part of the sandbox (see `SlackStandIn.plug_method`)."""

    handler: Callable[[dict[str, Any]], dict[str, Any]]
    check_token: Callable[[str], str | None]


def _random_id(prefix: str, length: int = 10) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def _flag(value: Any) -> bool:
    return value is True or value == 1 or (isinstance(value, str) and value.lower() in ("true", "1"))


def _decode_json_fields(params: dict[str, Any]) -> SlackError | None:
    """Form bodies carry `blocks`/`attachments`/`view` as JSON strings; decode them in place."""
    for key, error in _JSON_FIELDS.items():
        if isinstance(params.get(key), str):
            try:
                params[key] = json.loads(params[key])
            except ValueError:
                return SlackError(error, [f"[ERROR] failed to parse JSON [json-pointer:/{key}]"])
    return None


def _opt_str(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------------------------------------------
# The state


class SlackStandIn:
    """The workspace as the stand-in knows it, and the Web API over it.

    Configuration (token, channels, users, user groups) survives `reset()`; everything recorded does not.
    `channels`/`users` left empty mean "accept any well-formed ID", like a big workspace.
    """

    def __init__(
        self,
        *,
        bot_token: str | None = DEFAULT_BOT_TOKEN,
        team_id: str = TEAM_ID,
        channels: Mapping[str, str] | Iterable[str] | None = None,
        users: Mapping[str, Mapping[str, str]] | None = None,
        usergroups: Mapping[str, Iterable[str]] | None = None,
        retry_after_seconds: int = 1,
        trigger_ttl_seconds: float | None = TRIGGER_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bot_token = bot_token
        self.team_id = team_id
        if isinstance(channels, Mapping):
            self.channels: dict[str, str] = dict(channels)
        else:
            self.channels = {c: c.lower() for c in channels or ()}
        self.users: dict[str, dict[str, str]] = {k: dict(v) for k, v in (users or {}).items()}
        self.usergroups: dict[str, list[str]] = {k: list(v) for k, v in (usergroups or {}).items()}
        self.retry_after_seconds = retry_after_seconds
        self.trigger_ttl_seconds = trigger_ttl_seconds
        self.clock = clock
        self._lock = threading.RLock()
        self._last_us = 0
        self._plugged: dict[str, PluggedMethod] = {}
        self._init_records()

    def _init_records(self) -> None:
        self._messages: dict[str, list[Message]] = {}
        self._ephemerals: list[Ephemeral] = []
        self._responses: list[ResponsePost] = []
        self._response_uses: dict[str, int] = {}
        self._views: dict[str, OpenedView] = {}
        self._used_triggers: set[str] = set()
        self._calls: list[RecordedCall] = []
        self._acks: list[Ack] = []
        self._rate_limit_next: dict[str, int] = {}
        self._errors_next: dict[str, list[tuple[str, int]]] = {}

    # ----- configuration and faults -------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything recorded and every pending fault; keep the configuration."""
        with self._lock:
            self._init_records()

    def rate_limit(self, method: str, times: int = 1) -> None:
        """The next `times` calls of `method` get 429 + `Retry-After: retry_after_seconds`."""
        with self._lock:
            self._rate_limit_next[method] = self._rate_limit_next.get(method, 0) + times

    @property
    def rate_limit_next(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rate_limit_next)

    def fail_next(self, method: str, error: str = "internal_error", *, times: int = 1, status: int = 200) -> None:
        """The next `times` calls of `method` fail with `error` (HTTP `status`; Slack mostly uses 200)."""
        with self._lock:
            self._errors_next.setdefault(method, []).extend([(error, status)] * times)

    # ----- reading state (copies: safe to keep while the server goes on) -----------------------------

    def messages(self, channel: str) -> list[Message]:
        """Top-level messages in a channel (thread replies only if broadcast), oldest first."""
        with self._lock:
            return [
                copy.deepcopy(m)
                for m in self._messages.get(channel, [])
                if not m.deleted and (not m.is_reply or m.reply_broadcast)
            ]

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Replies in the thread under `ts` (the parent excluded), oldest first."""
        with self._lock:
            return [
                copy.deepcopy(m)
                for m in self._messages.get(channel, [])
                if not m.deleted and m.is_reply and m.thread_ts == ts
            ]

    def message(self, channel: str, ts: str) -> Message | None:
        with self._lock:
            found = self._find_message(channel, ts)
            return copy.deepcopy(found) if found else None

    def channels_with_messages(self) -> list[str]:
        with self._lock:
            return [c for c, msgs in self._messages.items() if msgs]

    def ephemerals(self, user: str | None = None, channel: str | None = None) -> list[Ephemeral]:
        with self._lock:
            return [
                copy.deepcopy(e)
                for e in self._ephemerals
                if not e.deleted and user in (None, e.user) and channel in (None, e.channel)
            ]

    def responses(self, token: str | None = None) -> list[ResponsePost]:
        with self._lock:
            return [copy.deepcopy(r) for r in self._responses if token in (None, r.token)]

    def views(self, user: str | None = None, *, open_only: bool = False) -> list[OpenedView]:
        with self._lock:
            return [
                copy.deepcopy(v)
                for v in self._views.values()
                if user in (None, v.user) and not (open_only and v.closed)
            ]

    def view(self, view_id: str) -> OpenedView | None:
        with self._lock:
            found = self._views.get(view_id)
            return copy.deepcopy(found) if found else None

    def acks(self, kind: str | None = None) -> list[Ack]:
        with self._lock:
            return [copy.deepcopy(a) for a in self._acks if kind in (None, a.kind)]

    def calls(self, method: str | None = None) -> list[RecordedCall]:
        with self._lock:
            return [copy.deepcopy(c) for c in self._calls if method in (None, c.method)]

    def count(self, method: str) -> int:
        """How many calls of `method` arrived (failed ones included: Slack counts them against limits)."""
        with self._lock:
            return sum(1 for c in self._calls if c.method == method)

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01) -> T:
        """Poll `predicate` until it returns something truthy; return that, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)

    async def wait_for_async(
        self,
        predicate: Callable[[], T],
        timeout: float = 5.0,  # noqa: ASYNC109 (same signature as wait_for on purpose)
        interval: float = 0.01,
    ) -> T:
        """`wait_for` for async tests: yields to the event loop (the bot may run in it) between polls."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            await asyncio.sleep(interval)

    # ----- seeding ---------------------------------------------------------------------------------------

    def add_user_message(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> Message:
        """A message a person posted (the bot cannot `chat.update` it: `cant_update_message`)."""
        with self._lock:
            msg = Message(
                channel=channel,
                ts=self._next_ts(),
                text=text,
                user=user,
                thread_ts=thread_ts,
                posted_via="user",
            )
            self._messages.setdefault(channel, []).append(msg)
            return copy.deepcopy(msg)

    def response_url(
        self,
        base_url: str,
        channel: str,
        user: str,
        *,
        message_ts: str | None = None,
        ephemeral: bool = False,
    ) -> str:
        """Mint a `response_url` the way the driver does (for tests that call the bot's code directly)."""
        ctx = ResponseContext(self.team_id, channel, user, message_ts, ephemeral, int(self.clock()))
        return f"{base_url.rstrip('/')}/response/{mint_response_token(ctx)}"

    def trigger_id(self, user: str) -> str:
        return mint_trigger_id(user, self.clock())

    # ----- the Web API -----------------------------------------------------------------------------------

    def call(self, method: str, params: Mapping[str, Any], *, authorization: str | None = None) -> ApiResult:
        """Answer one Web API call exactly as `POST https://slack.com/api/{method}` would."""
        with self._lock:
            params = dict(params)
            token = params.pop("token", None)
            if authorization and authorization.lower().startswith("bearer "):
                token = authorization[7:].strip()
            headers = {"X-Slack-Req-Id": secrets.token_hex(16)}
            status, body = 200, self._dispatch(method, params, token)
            if body.get("error") == "ratelimited":
                status = 429
                headers["Retry-After"] = str(self.retry_after_seconds)
            elif "_status" in body:
                status = int(body.pop("_status"))
            self._calls.append(
                RecordedCall(
                    method=method,
                    params=copy.deepcopy(params),
                    at=self.clock(),
                    status=status,
                    error=None if body.get("ok") else str(body.get("error")),
                    response=copy.deepcopy(body),
                )
            )
            return ApiResult(status, body, headers)

    def plug_method(
        self,
        method: str,
        handler: Callable[[dict[str, Any]], dict[str, Any]],
        check_token: Callable[[str], str | None],
    ) -> None:
        """Answer `method` with `handler`, authenticated by `check_token` instead of the bot token.

        For parts of Slack that live elsewhere in the sandbox: the Socket Mode stand-in plugs in
        `apps.connections.open`, which takes the app-level token (`xapp-…`). `check_token` returns the Slack
        error for a token it refuses (`invalid_auth`, `not_allowed_token_type`), None to accept it. The
        handler runs under the stand-in's lock and may raise `SlackError`. Kept across `reset()`.
        """
        with self._lock:
            self._plugged[method] = PluggedMethod(handler, check_token)

    def _dispatch(self, method: str, params: dict[str, Any], token: Any) -> dict[str, Any]:
        plugged = self._plugged.get(method)
        handler = plugged.handler if plugged else self._handlers().get(method)
        if handler is None:
            return {"ok": False, "error": "unknown_method", "req_method": method}
        decode_error = _decode_json_fields(params)  # recorded params show blocks/view as JSON, not strings
        if not token:
            return {"ok": False, "error": "not_authed"}
        if plugged is not None:
            refused = plugged.check_token(token) if isinstance(token, str) else "invalid_auth"
            if refused:
                return {"ok": False, "error": refused}
        elif not isinstance(token, str) or not self._token_ok(token):
            return {"ok": False, "error": "invalid_auth"}
        if self._rate_limit_next.get(method, 0) > 0:
            self._rate_limit_next[method] -= 1
            return {"ok": False, "error": "ratelimited"}
        queued = self._errors_next.get(method)
        if queued:
            error, status = queued.pop(0)
            return {"ok": False, "error": error, "_status": status}
        try:
            if decode_error:
                raise decode_error
            return {"ok": True, **handler(params)}
        except SlackError as exc:
            out: dict[str, Any] = {"ok": False, "error": exc.error}
            if exc.messages:
                out["response_metadata"] = {"messages": exc.messages}
            return out

    def _token_ok(self, token: str) -> bool:
        if self.bot_token is None:
            return token.startswith(("xoxb-", "xoxp-"))
        return secrets.compare_digest(token, self.bot_token)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "api.test": lambda p: {"args": p},
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.push": self._views_push,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
        }

    # ----- helpers used by the methods ------------------------------------------------------------------

    def _next_ts(self) -> str:
        """A Slack `ts` ("1733300000.000100"): wall-clock based and strictly increasing."""
        us = max(int(self.clock() * 1_000_000), self._last_us + 1)
        self._last_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def _find_message(self, channel: str, ts: str) -> Message | None:
        for msg in self._messages.get(channel, []):
            if msg.ts == ts and not msg.deleted:
                return msg
        return None

    def _resolve_channel(self, value: str | None) -> str:
        if not value:
            raise SlackError("channel_not_found")
        if USER_RE.match(value):  # posting to a user ID opens (or reuses) the DM with them
            if self.users and value not in self.users:
                raise SlackError("channel_not_found")
            return "D" + value[1:]
        if self.channels:
            if value in self.channels:
                return value
            for cid, name in self.channels.items():
                if value.lstrip("#") == name:
                    return cid
            raise SlackError("channel_not_found")
        if _CONVERSATION_RE.match(value):
            return value
        raise SlackError("channel_not_found")

    def _check_user(self, user: str | None) -> str:
        if not user:
            raise SlackError("invalid_arguments", ["[ERROR] missing required field: user"])
        if not USER_RE.match(user) or (self.users and user not in self.users):
            raise SlackError("user_not_found")
        return user

    @staticmethod
    def _content(
        params: Mapping[str, Any], *, required: bool = True
    ) -> tuple[str | None, list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
        text = _opt_str(params, "text")
        blocks = params.get("blocks")
        attachments = params.get("attachments")
        if text is not None and len(text) > MESSAGE_TEXT_LIMIT:
            raise SlackError("msg_too_long")
        if blocks is not None:
            errors = validate_blocks(blocks, limit=MESSAGE_BLOCK_LIMIT)
            if errors:
                raise SlackError("invalid_blocks", errors)
        if attachments is not None and not (
            isinstance(attachments, list) and all(isinstance(a, dict) for a in attachments)
        ):
            raise SlackError("invalid_attachments")
        if required and not text and not blocks and not attachments:
            raise SlackError("no_text")
        return text, blocks, attachments

    # ----- methods ---------------------------------------------------------------------------------------

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": "Sandbox",
            "user": BOT_NAME,
            "team_id": self.team_id,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(_opt_str(params, "channel"))
        text, blocks, attachments = self._content(params)
        msg = Message(
            channel=channel,
            ts=self._next_ts(),
            text=text or "",
            blocks=copy.deepcopy(blocks or []),
            attachments=copy.deepcopy(attachments or []),
            thread_ts=_opt_str(params, "thread_ts"),  # Slack accepts an unknown thread_ts silently
            reply_broadcast=_flag(params.get("reply_broadcast")) and bool(_opt_str(params, "thread_ts")),
            metadata=params.get("metadata") if isinstance(params.get("metadata"), dict) else None,
        )
        self._messages.setdefault(channel, []).append(msg)
        return {"channel": channel, "ts": msg.ts, "message": msg.to_slack()}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(_opt_str(params, "channel"))
        ts = _opt_str(params, "ts")
        msg = self._find_message(channel, ts) if ts else None
        if msg is None:
            raise SlackError("message_not_found")
        if not msg.is_bot:
            raise SlackError("cant_update_message")
        text, blocks, attachments = self._content(params)
        self._edit(msg, text, blocks, attachments, "chat.update")
        return {"channel": channel, "ts": msg.ts, "text": msg.text, "message": msg.to_slack()}

    def _edit(
        self,
        msg: Message | Ephemeral,
        text: str | None,
        blocks: list[dict[str, Any]] | None,
        attachments: list[dict[str, Any]] | None,
        via: str,
    ) -> None:
        """Slack's rule: omitted `blocks`/`attachments` are kept, `[]` removes them; text is replaced."""
        msg.edits.append(Edit(msg.text, msg.blocks, msg.attachments, self.clock(), via))
        if text is not None:
            msg.text = text
        if blocks is not None:
            msg.blocks = copy.deepcopy(blocks)
        if attachments is not None:
            msg.attachments = copy.deepcopy(attachments)

    def _chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(_opt_str(params, "channel"))
        ts = _opt_str(params, "ts")
        msg = self._find_message(channel, ts) if ts else None
        if msg is None:
            raise SlackError("message_not_found")
        if not msg.is_bot:
            raise SlackError("cant_delete_message")
        msg.deleted = True
        return {"channel": channel, "ts": msg.ts}

    def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(_opt_str(params, "channel"))
        user = self._check_user(_opt_str(params, "user"))
        text, blocks, attachments = self._content(params)
        eph = Ephemeral(
            channel=channel,
            user=user,
            ts=self._next_ts(),
            text=text or "",
            blocks=copy.deepcopy(blocks or []),
            attachments=copy.deepcopy(attachments or []),
            thread_ts=_opt_str(params, "thread_ts"),
        )
        self._ephemerals.append(eph)
        return {"message_ts": eph.ts}

    def _exchange_trigger(self, trigger_id: str | None) -> str | None:
        """Check a trigger the way Slack does (single use, ~3 s life); return the user it was issued to."""
        if not trigger_id:
            raise SlackError("invalid_arguments", ["[ERROR] missing required field: trigger_id"])
        if trigger_id in self._used_triggers:
            raise SlackError("exchanged_trigger_id")
        parsed = parse_trigger_id(trigger_id)
        ttl = self.trigger_ttl_seconds
        if parsed and ttl is not None and self.clock() - parsed[1] > ttl:
            raise SlackError("expired_trigger_id")
        self._used_triggers.add(trigger_id)
        return parsed[0] if parsed else None

    def _full_view(self, view: dict[str, Any], view_id: str, root_id: str, previous: str | None) -> dict[str, Any]:
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": view.get("type", "modal"),
            "blocks": copy.deepcopy(view.get("blocks", [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{int(self.clock())}.{secrets.token_hex(4)}",
            "title": copy.deepcopy(view.get("title")),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": copy.deepcopy(view.get("close")),
            "submit": copy.deepcopy(view.get("submit")),
            "previous_view_id": previous,
            "root_view_id": root_id,
            "app_id": APP_ID,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": BOT_ID,
        }

    def _checked_view(self, params: Mapping[str, Any]) -> dict[str, Any]:
        view = params.get("view")
        errors = validate_modal(view)
        if errors:
            raise SlackError("invalid_arguments", errors)
        assert isinstance(view, dict)
        external_id = view.get("external_id")
        if external_id and any(v.view.get("external_id") == external_id and not v.closed for v in self._views.values()):
            raise SlackError("duplicate_external_id")
        return view

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        view = self._checked_view(params)
        trigger_id = _opt_str(params, "trigger_id")
        user = self._exchange_trigger(trigger_id)
        view_id = _random_id("V")
        opened = OpenedView(view_id, user, trigger_id, self._full_view(view, view_id, view_id, None))
        self._views[view_id] = opened
        return {"view": copy.deepcopy(opened.view)}

    def _views_push(self, params: dict[str, Any]) -> dict[str, Any]:
        view = self._checked_view(params)
        trigger_id = _opt_str(params, "trigger_id")
        user = self._exchange_trigger(trigger_id)
        stack = [v for v in self._views.values() if v.user == user and not v.closed]
        if not stack:
            raise SlackError("not_found")
        if len(stack) >= VIEW_STACK_LIMIT:
            raise SlackError("push_limit_reached")
        top = stack[-1]
        view_id = _random_id("V")
        full = self._full_view(view, view_id, str(top.view["root_view_id"]), top.id)
        self._views[view_id] = OpenedView(view_id, user, trigger_id, full, opened_via="views.push")
        return {"view": copy.deepcopy(full)}

    def _views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view_id, external_id = _opt_str(params, "view_id"), _opt_str(params, "external_id")
        if not view_id and not external_id:
            raise SlackError("invalid_arguments", ["[ERROR] either view_id or external_id is required"])
        target = next(
            (
                v
                for v in self._views.values()
                if (view_id and v.id == view_id) or (external_id and v.view.get("external_id") == external_id)
            ),
            None,
        )
        if target is None or target.closed:
            raise SlackError("not_found")
        expected_hash = _opt_str(params, "hash")
        if expected_hash and expected_hash != target.view["hash"]:
            raise SlackError("hash_conflict")
        view = params.get("view")
        errors = validate_modal(view)
        if errors:
            raise SlackError("invalid_arguments", errors)
        assert isinstance(view, dict)
        self._replace_view(target, view)
        return {"view": copy.deepcopy(target.view)}

    def _replace_view(self, target: OpenedView, view: dict[str, Any]) -> None:
        target.history.append(copy.deepcopy(target.view))
        target.view = self._full_view(
            view, target.id, str(target.view["root_view_id"]), target.view.get("previous_view_id")
        )
        target.errors = None

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = _opt_str(params, "usergroup")
        if not group or group not in self.usergroups:
            raise SlackError("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self._check_user(_opt_str(params, "user"))
        profile = self.users.get(user, {})
        name = profile.get("name", user.lower())
        real_name = profile.get("real_name", name)
        return {
            "user": {
                "id": user,
                "team_id": self.team_id,
                "name": name,
                "real_name": real_name,
                "deleted": False,
                "is_bot": False,
                "tz": profile.get("tz", "UTC"),
                "profile": {"real_name": real_name, "display_name": profile.get("display_name", name)},
            }
        }

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(_opt_str(params, "channel"))
        is_im = channel.startswith("D")
        return {
            "channel": {
                "id": channel,
                "name": self.channels.get(channel, channel.lower()),
                "is_channel": channel.startswith("C"),
                "is_group": channel.startswith("G"),
                "is_im": is_im,
                "is_private": not channel.startswith("C"),
                "is_archived": False,
                "is_member": True,
                "context_team_id": self.team_id,
            }
        }

    # ----- response_url ----------------------------------------------------------------------------------

    def post_response(self, token: str, body: Any) -> ApiResult:
        """Handle a POST to `/response/{token}`: Slack's rules for `response_url` (5 uses in 30 minutes)."""
        with self._lock:
            ctx = parse_response_token(token)
            now = self.clock()
            payload = body if isinstance(body, dict) else {}

            def reject(status: int, error: str) -> ApiResult:
                self._responses.append(
                    ResponsePost(token, copy.deepcopy(payload), now, status, uses, f"rejected:{error}")
                )
                return ApiResult(status, {"ok": False, "error": error}, {})

            uses = self._response_uses.get(token, 0)
            if ctx is None:
                return reject(404, "no_service")
            if uses >= RESPONSE_URL_MAX_USES:
                return reject(404, "used_url")
            if now - ctx.issued_at > RESPONSE_URL_TTL_SECONDS:
                return reject(404, "expired_url")
            if not isinstance(body, dict):
                return reject(400, "invalid_payload")
            try:
                effect = self._apply_response(ctx, payload)
            except SlackError as exc:
                return reject(400, exc.error)
            uses += 1
            self._response_uses[token] = uses
            self._responses.append(
                ResponsePost(
                    token,
                    copy.deepcopy(payload),
                    now,
                    200,
                    uses,
                    effect,
                    channel=ctx.channel,
                    user=ctx.user,
                    message_ts=ctx.message_ts,
                )
            )
            return ApiResult(200, {"ok": True}, {})

    def _apply_response(self, ctx: ResponseContext, body: dict[str, Any]) -> str:
        if _flag(body.get("delete_original")):
            original = self._original(ctx)
            if original is None:
                raise SlackError("message_not_found")
            original.deleted = True
            return "deleted"
        text, blocks, attachments = self._content(body)
        if _flag(body.get("replace_original")):
            original = self._original(ctx)
            if original is not None:
                self._edit(original, text or "", blocks or [], attachments or [], "response_url")
                return "replaced"
        thread_ts = _opt_str(body, "thread_ts")
        if body.get("response_type") == "in_channel":
            msg = Message(
                channel=ctx.channel,
                ts=self._next_ts(),
                text=text or "",
                blocks=copy.deepcopy(blocks or []),
                attachments=copy.deepcopy(attachments or []),
                thread_ts=thread_ts,
                posted_via="response_url",
            )
            self._messages.setdefault(ctx.channel, []).append(msg)
            return "posted_in_channel"
        self._ephemerals.append(
            Ephemeral(
                channel=ctx.channel,
                user=ctx.user,
                ts=self._next_ts(),
                text=text or "",
                blocks=copy.deepcopy(blocks or []),
                attachments=copy.deepcopy(attachments or []),
                thread_ts=thread_ts,
                via="response_url",
            )
        )
        return "posted_ephemeral"

    def _original(self, ctx: ResponseContext) -> Message | Ephemeral | None:
        """The message the interaction came from (a channel message, or the user's ephemeral)."""
        if ctx.message_ts is None:
            # a slash command's original is the latest ephemeral answer it produced for this user
            for eph in reversed(self._ephemerals):
                if float(eph.ts) < ctx.issued_at:
                    break
                if eph.user == ctx.user and eph.channel == ctx.channel and not eph.deleted:
                    return eph if eph.via in ("ack", "response_url") else None
            return None
        if ctx.ephemeral:
            return next(
                (e for e in self._ephemerals if e.ts == ctx.message_ts and e.user == ctx.user and not e.deleted),
                None,
            )
        return self._find_message(ctx.channel, ctx.message_ts)

    # ----- what Slack does with a bot's HTTP answer (reported by the driver) -----------------------------

    def record_ack(
        self,
        kind: str,
        *,
        user: str,
        channel: str | None,
        status: int,
        body: dict[str, Any] | None,
        elapsed: float,
        view_id: str | None = None,
        command: str | None = None,
    ) -> Ack:
        """Apply a bot's acknowledgement the way Slack would show it, and record it."""
        with self._lock:
            effect = self._apply_ack(
                kind,
                user=user,
                channel=channel,
                status=status,
                body=body,
                elapsed=elapsed,
                view_id=view_id,
                command=command,
            )
            ack = Ack(kind, user, channel, status, copy.deepcopy(body), elapsed, self.clock(), effect)
            self._acks.append(ack)
            return copy.deepcopy(ack)

    def _apply_ack(
        self,
        kind: str,
        *,
        user: str,
        channel: str | None,
        status: int,
        body: dict[str, Any] | None,
        elapsed: float,
        view_id: str | None,
        command: str | None,
    ) -> str:
        failure = "operation_timeout" if elapsed > 3.0 else None if 200 <= status < 300 else "dispatch_failed"
        if failure:
            if kind == "command" and channel:
                self._ephemerals.append(
                    Ephemeral(
                        channel=channel,
                        user=user,
                        ts=self._next_ts(),
                        text=f'{command or "/command"} failed with the error "{failure}"',
                        via="slack",
                    )
                )
            return failure
        if kind == "command" and channel and body:
            try:
                text, blocks, attachments = self._content(body)
            except SlackError as exc:
                return f"invalid:{exc.error}"
            if body.get("response_type") == "in_channel":
                msg = Message(channel, self._next_ts(), text or "", blocks or [], attachments or [], posted_via="ack")
                self._messages.setdefault(channel, []).append(msg)
                return "posted_in_channel"
            self._ephemerals.append(
                Ephemeral(channel, user, self._next_ts(), text or "", blocks or [], attachments or [], via="ack")
            )
            return "posted_ephemeral"
        if kind == "view_submission" and view_id in self._views:
            return self._apply_view_ack(self._views[view_id], body or {})
        return "none"

    def _apply_view_ack(self, view: OpenedView, body: dict[str, Any]) -> str:
        action = body.get("response_action")
        if action == "errors":
            view.errors = dict(body.get("errors") or {})
            return "errors"
        if action == "update" and isinstance(body.get("view"), dict):
            self._replace_view(view, body["view"])
            return "updated"
        if action == "push" and isinstance(body.get("view"), dict):
            new_id = _random_id("V")
            full = self._full_view(body["view"], new_id, str(view.view["root_view_id"]), view.id)
            self._views[new_id] = OpenedView(new_id, view.user, None, full, opened_via="response_action")
            return "pushed"
        if action == "clear":
            for other in self._views.values():
                if other.view.get("root_view_id") == view.view.get("root_view_id"):
                    other.closed = True
            return "cleared"
        view.closed = True
        return "closed"


# ---------------------------------------------------------------------------------------------------------
# HTTP


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any] | None:
    if not raw:
        return {}
    if "application/json" in content_type:
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _json(result: ApiResult) -> JSONResponse:
    return JSONResponse(result.body, status_code=result.status, headers=result.headers)


def _dump(items: Iterable[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        data = dict(item.__dict__)
        if isinstance(item, Message | Ephemeral):
            data["slack"] = item.to_slack()
        out.append(json.loads(json.dumps(data, default=lambda o: o.__dict__)))
    return out


def create_app(state: SlackStandIn | None = None) -> Starlette:
    """The stand-in as an ASGI app: `/api/{method}`, `/response/{token}`, and `/_standin/…` to inspect it."""
    standin = state if state is not None else SlackStandIn()

    async def api(request: Request) -> Response:
        method = request.path_params["method"]
        params: dict[str, Any] = dict(request.query_params)
        body = _parse_body(await request.body(), request.headers.get("content-type", ""))
        if body is None:
            return JSONResponse({"ok": False, "error": "invalid_json"})
        params.update(body)
        return _json(standin.call(method, params, authorization=request.headers.get("authorization")))

    async def response_url(request: Request) -> Response:
        raw = await request.body()
        body: Any
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            form = dict(parse_qsl(raw.decode("utf-8", "replace")))
            body = None
            with contextlib.suppress(ValueError):
                body = json.loads(form.get("payload", ""))
        return _json(standin.post_response(request.path_params["token"], body))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def calls(request: Request) -> Response:
        method = request.query_params.get("method")
        return JSONResponse({"ok": True, "calls": _dump(standin.calls(method))})

    async def reset(request: Request) -> Response:
        standin.reset()
        return JSONResponse({"ok": True})

    async def messages(request: Request) -> Response:
        channel = request.query_params.get("channel", "")
        ts = request.query_params.get("thread_ts")
        found = standin.thread(channel, ts) if ts else standin.messages(channel)
        return JSONResponse({"ok": True, "messages": _dump(found)})

    async def message(request: Request) -> Response:
        q = request.query_params
        found = standin.message(q.get("channel", ""), q.get("ts", ""))
        if found is None:
            return JSONResponse({"ok": False, "error": "message_not_found"}, status_code=404)
        return JSONResponse({"ok": True, "message": _dump([found])[0]})

    async def ephemerals(request: Request) -> Response:
        q = request.query_params
        return JSONResponse({"ok": True, "ephemerals": _dump(standin.ephemerals(q.get("user"), q.get("channel")))})

    async def views(request: Request) -> Response:
        user = request.query_params.get("user")
        open_only = _flag(request.query_params.get("open"))
        return JSONResponse({"ok": True, "views": _dump(standin.views(user, open_only=open_only))})

    async def responses(request: Request) -> Response:
        return JSONResponse({"ok": True, "responses": _dump(standin.responses(request.query_params.get("token")))})

    async def acks(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"ok": True, "acks": _dump(standin.acks(request.query_params.get("kind")))})
        data = await request.json()
        ack = standin.record_ack(
            str(data["kind"]),
            user=str(data["user"]),
            channel=data.get("channel"),
            status=int(data["status"]),
            body=data.get("body"),
            elapsed=float(data.get("elapsed", 0.0)),
            view_id=data.get("view_id"),
            command=data.get("command"),
        )
        return JSONResponse({"ok": True, "effect": ack.effect})

    async def rate_limit(request: Request) -> Response:
        data = await request.json()
        standin.rate_limit(str(data["method"]), int(data.get("times", 1)))
        return JSONResponse({"ok": True, "rate_limit_next": standin.rate_limit_next})

    app = Starlette(
        routes=[
            Route("/api/{method}", api, methods=["GET", "POST"]),
            Route("/response/{token}", response_url, methods=["POST"]),
            Route("/_standin/healthz", healthz, methods=["GET"]),
            Route("/_standin/calls", calls, methods=["GET"]),
            Route("/_standin/reset", reset, methods=["POST"]),
            Route("/_standin/messages", messages, methods=["GET"]),
            Route("/_standin/message", message, methods=["GET"]),
            Route("/_standin/ephemerals", ephemerals, methods=["GET"]),
            Route("/_standin/views", views, methods=["GET"]),
            Route("/_standin/responses", responses, methods=["GET"]),
            Route("/_standin/acks", acks, methods=["GET", "POST"]),
            Route("/_standin/rate_limit", rate_limit, methods=["POST"]),
        ]
    )
    app.state.standin = standin
    return app
