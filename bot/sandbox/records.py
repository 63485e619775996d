"""What the Slack stand-in records (messages, ephemerals, modals, calls) and the tokens it hands out.

Plain dataclasses so tests read them as attributes; `to_slack()` gives the JSON Slack itself would show.
The `response_url` and `trigger_id` tokens carry their context (channel, user, issue time), so a driver in
another process can mint them without asking the stand-in first.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BOT_TOKEN = "xoxb-sandbox-token"  # noqa: S105 (a fake token for the stand-in)
TEAM_ID = "T0SANDBOX"
TEAM_DOMAIN = "sandbox"
APP_ID = "A0SANDBOX"
BOT_ID = "B0SANDBOX"
BOT_USER_ID = "U0SANDBOXBOT"
BOT_NAME = "unlock-bot"

USER_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")


# ---------------------------------------------------------------------------------------------------------
# Records


@dataclass
class RecordedCall:
    """One Web API call as received (token removed), with what the stand-in answered."""

    method: str
    params: dict[str, Any]
    at: float
    status: int = 200
    error: str | None = None
    response: dict[str, Any] = field(default_factory=dict)


@dataclass
class Edit:
    """A previous version of a message, kept when `chat.update` or `replace_original` changed it."""

    text: str
    blocks: list[dict[str, Any]]
    attachments: list[dict[str, Any]]
    at: float
    replaced_by: str  # "chat.update" or "response_url"


@dataclass
class Message:
    """A message in a channel (top level or thread reply), in its current (edited) form."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    user: str = BOT_USER_ID
    thread_ts: str | None = None
    reply_broadcast: bool = False
    metadata: dict[str, Any] | None = None
    posted_via: str = "chat.postMessage"
    edits: list[Edit] = field(default_factory=list)
    deleted: bool = False

    @property
    def is_bot(self) -> bool:
        return self.user == BOT_USER_ID

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_slack(self) -> dict[str, Any]:
        """The message object as Slack returns it from `chat.postMessage` / `conversations.history`."""
        out: dict[str, Any] = {"type": "message", "user": self.user, "text": self.text, "ts": self.ts}
        out["team"] = TEAM_ID
        if self.is_bot:
            out.update(bot_id=BOT_ID, app_id=APP_ID)
        if self.blocks:
            out["blocks"] = copy.deepcopy(self.blocks)
        if self.attachments:
            out["attachments"] = copy.deepcopy(self.attachments)
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
            if self.is_reply:
                out["parent_user_id"] = BOT_USER_ID
        if self.reply_broadcast:
            out["subtype"] = "thread_broadcast"
        if self.edits:
            out["edited"] = {"user": BOT_USER_ID, "ts": self.ts}
        if self.metadata is not None:
            out["metadata"] = copy.deepcopy(self.metadata)
        return out


@dataclass
class Ephemeral:
    """A message only `user` sees; Slack keeps no copy the bot could `chat.update`."""

    channel: str
    user: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    via: str = "chat.postEphemeral"  # or "response_url", "ack", "slack" (Slack's own error notices)
    edits: list[Edit] = field(default_factory=list)
    deleted: bool = False

    def to_slack(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "message", "text": self.text, "ts": self.ts, "is_ephemeral": True}
        if self.blocks:
            out["blocks"] = copy.deepcopy(self.blocks)
        if self.attachments:
            out["attachments"] = copy.deepcopy(self.attachments)
        return out


@dataclass
class ResponsePost:
    """One POST to a `response_url`, accepted or not, and what it did (`effect`)."""

    token: str
    body: dict[str, Any]
    at: float
    status: int
    use: int
    effect: str  # posted_ephemeral | posted_in_channel | replaced | deleted | rejected:<error>
    channel: str | None = None
    user: str | None = None
    message_ts: str | None = None


@dataclass
class OpenedView:
    """A modal as Slack holds it: opened, maybe updated or pushed onto, closed on submit or `clear`."""

    id: str
    user: str | None
    trigger_id: str | None
    view: dict[str, Any]
    opened_via: str = "views.open"
    closed: bool = False
    errors: dict[str, str] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def callback_id(self) -> str:
        return str(self.view.get("callback_id", ""))


@dataclass
class Ack:
    """What a bot answered to a request the driver delivered, and the effect Slack gives it."""

    kind: str
    user: str
    channel: str | None
    status: int
    body: dict[str, Any] | None
    elapsed: float
    at: float
    effect: str


@dataclass(frozen=True)
class ResponseContext:
    """Where a `response_url` posts to; encoded in the URL's token so any process can mint one."""

    team_id: str
    channel: str
    user: str
    message_ts: str | None
    ephemeral: bool
    issued_at: int


@dataclass(frozen=True)
class ApiResult:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class SlackError(Exception):
    """A Web API error: becomes `{"ok": false, "error": error}` (plus Slack's messages) on the wire."""

    def __init__(self, error: str, messages: Iterable[str] = ()) -> None:
        super().__init__(error)
        self.error = error
        self.messages = list(messages)


# ---------------------------------------------------------------------------------------------------------
# Tokens the driver hands out and the stand-in understands


def mint_response_token(ctx: ResponseContext) -> str:
    """A `response_url` token carrying its context (`_` never occurs in IDs or ts)."""
    return "_".join(
        [
            ctx.team_id,
            ctx.channel,
            ctx.user,
            ctx.message_ts or "0",
            "e" if ctx.ephemeral else "m",
            str(ctx.issued_at),
            secrets.token_hex(8),
        ]
    )


def parse_response_token(token: str) -> ResponseContext | None:
    parts = token.split("_")
    if len(parts) != 7 or parts[4] not in ("e", "m") or not parts[5].isdigit():
        return None
    team, channel, user, message_ts, flag, issued, _ = parts
    return ResponseContext(
        team_id=team,
        channel=channel,
        user=user,
        message_ts=None if message_ts == "0" else message_ts,
        ephemeral=flag == "e",
        issued_at=int(issued),
    )


def mint_trigger_id(user: str, issued_at: float) -> str:
    """Slack-like `{number}.{number}.{hex}`-ish trigger ID that also names the user and issue time."""
    return f"{int(issued_at * 1000)}.{user}.{secrets.token_hex(16)}"


def parse_trigger_id(trigger_id: str) -> tuple[str, float] | None:
    parts = trigger_id.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not USER_RE.match(parts[1]):
        return None
    return parts[1], int(parts[0]) / 1000
