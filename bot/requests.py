"""The domain: an unlock request, its states, per-node results, and parsing the command text.

Nothing here knows Slack payloads, HTTP or the database; everything here is a pure value or function.
"""

from __future__ import annotations

import difflib
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class RequestState(StrEnum):
    """Where a request is in its life (design.md, "The request's life")."""

    PENDING = "pending"
    APPROVED = "approved"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    DENIED = "denied"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        RequestState.SUCCEEDED,
        RequestState.PARTIALLY_FAILED,
        RequestState.FAILED,
        RequestState.DENIED,
        RequestState.CANCELLED,
        RequestState.EXPIRED,
    }
)


class NodeStatus(StrEnum):
    """The outcome for one node: `unknown` when the call's fate could not be learned."""

    SUCCESS = "success"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class NodeResult:
    """What happened to one node; `request_id` is ModelArts' X-Request-Id of the call that decided it."""

    node: str
    status: NodeStatus
    reason: str | None = None
    request_id: str | None = None


def new_request_id() -> str:
    """A short, unguessable, URL- and button-safe request ID, e.g. `ulk-5f0c2a9b1d3e`."""
    return f"ulk-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class UnlockRequest:
    """One request to unlock nodes of one pool, as stored.

    The node list lives here (and in the store), never in a Slack button: buttons carry only `id`.
    """

    id: str
    team_id: str
    channel_id: str
    requester_id: str
    pool: str
    nodes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    state: RequestState = RequestState.PENDING
    reason: str | None = None
    two_person: bool = True
    decided_by: str | None = None  # who approved, denied or cancelled it ("system" for an expiry)
    decided_at: datetime | None = None
    message_ts: str | None = None  # the approval message in `channel_id`; results go in its thread
    retry_of: str | None = None  # the request whose failed nodes this one retries
    updated_at: datetime | None = None
    detail: str | None = None  # why a request failed as a whole, e.g. "pool not found (request ID …)"

    def with_state(self, state: RequestState, **changes: object) -> UnlockRequest:
        return replace(self, state=state, **changes)  # type: ignore[arg-type]


# -- parsing the command text ---------------------------------------------------------------------------
#
# Grammar (design.md): `<pool> <node> [<node> …] [--reason "…"] [--dry-run]`, `help`, or nothing (the form).
# Words are split the way a shell splits them (quotes group words, no backslash escapes), then each pool/node
# word is split further on commas and whitespace. The text comes from Slack, so it arrives with `&`, `<` and
# `>` escaped as entities, with "smart" quotes and dashes from phone and macOS keyboards, and sometimes with
# no-break or zero-width spaces from copy and paste; all of that is undone here.

# A DNS-label-like name; `\A…\Z` so that `NAME_RE.match` cannot accept a trailing newline.
NAME_RE = re.compile(r"\A[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?\Z")
NAME_RULE = "use lower-case letters, digits, '-' and '.', 1–63 characters, starting and ending with a letter or digit"
MAX_REASON_CHARS = 500
_SHOWN_BAD_NAMES = 3

_FLAGS = ("--reason", "--dry-run", "--help")
_SMART_DOUBLE = str.maketrans(dict.fromkeys("“”„‟″〝〞＂", '"'))
_SMART_SINGLE = str.maketrans(dict.fromkeys("‘’‚‛′＇", "'"))
_INVISIBLE = str.maketrans(dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff"))  # zero-width characters: dropped
_DASHES = ("\u2014", "\u2013", "\u2012", "\u2212")  # the dashes "--" becomes after autocorrect
_NODE_SEPARATORS = re.compile(r"[,\s]+")
# With link escaping on, Slack turns `node-1.az1` into `<http://node-1.az1|node-1.az1>`: keep the label.
_SLACK_LINK = re.compile(r"<((?:https?://|mailto:)[^|>\s]*)(?:\|([^>]*))?>")
_OPTION_RE = re.compile(r"-(?:-|[A-Za-z])")


class CommandError(ValueError):
    """The command text cannot be used; `str()` (and `message`) says exactly what is wrong, for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ParsedCommand:
    """A well-formed unlock command: names valid and deduplicated (first occurrence kept, in order)."""

    pool: str
    nodes: tuple[str, ...]
    duplicates_dropped: int = 0
    reason: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class HelpCommand:
    """`help`, `-h` or `--help`: show usage and what the caller may do."""


@dataclass(frozen=True)
class OpenModal:
    """Empty text: open the form instead."""


@dataclass(frozen=True)
class _Word:
    text: str
    quoted: bool  # some part of the word was inside quotes: a reason given this way stops after it
    lead_quoted: bool = False  # the word began with a quote: it is never an option

    @property
    def is_option(self) -> bool:
        return not self.lead_quoted and _OPTION_RE.match(self.text) is not None


def usage(command: str = "/unlock-nodes") -> str:
    """How to use the command; shown with `help` and after most errors."""
    return (
        f'*Usage:* `{command} <pool> <node> [<node> …] [--reason "…"] [--dry-run]`\n'
        "• Nodes may be separated by spaces, commas or new lines; duplicates are dropped.\n"
        "• Quote the reason, or put it last: an unquoted reason runs to the next option or the end.\n"
        "• `--dry-run` shows what would be unlocked without asking anyone.\n"
        f"• `{command}` alone opens a form; `{command} help` shows this and what you may do.\n"
        f'*Example:* `{command} pool-prod-a node-1,node-2 --reason "disk check, INC-1234"`'
    )


def validate_name(kind: str, value: str) -> None:
    """Raise `CommandError` naming `value` and what is wrong with it unless it is a valid `kind` name."""
    problem = _name_problem(value)
    if problem is not None:
        raise CommandError(f"{_show(value)} is not a valid {kind} name: {problem}. Names {NAME_RULE}.")


def check_node_limit(count: int, limit: int, *, pool: str | None = None) -> None:
    """Raise `CommandError` when a request names more (deduplicated) nodes than its pool allows."""
    if count > limit:
        where = f"pool `{pool}`" if pool else "this pool"
        raise CommandError(
            f"That is {count} nodes; {where} allows at most {limit} per request. "
            f"Split the list into requests of {limit} nodes or fewer."
        )


def parse_command(text: str, *, command: str = "/unlock-nodes") -> ParsedCommand | HelpCommand | OpenModal:
    """Turn the slash command's text into a command, or raise `CommandError` saying what to fix."""
    words = _split_words(_normalize(text))
    if not words:
        return OpenModal()
    if words[0].text == "help" and not words[0].quoted:
        return HelpCommand()

    names: list[str] = []
    reasons: list[str] = []
    dry_run = False
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.is_option:
            names.extend(n for n in _NODE_SEPARATORS.split(word.text) if n)
            continue
        flag, has_value, value = word.text.partition("=")
        if flag in ("--help", "-h"):
            return HelpCommand()
        if flag == "--dry-run" and not has_value:
            dry_run = True
        elif flag == "--reason":
            given, i = _take_reason(words, i, _Word(value, word.quoted) if has_value else None)
            reasons.append(given)
        elif flag == "--dry-run":
            raise CommandError("`--dry-run` takes no value: write just `--dry-run`.")
        else:
            raise CommandError(_unknown_flag(word.text))

    reason = _one_reason(reasons)
    if not names:
        raise CommandError(f"Name a pool and the nodes to unlock, e.g. `{command} pool-prod-a node-1 node-2`.")
    pool, node_list = names[0], names[1:]
    validate_name("pool", pool)
    if not node_list:
        raise CommandError(
            f"No nodes given for pool {_show(pool)}: list them after the pool, e.g. `{command} {pool} node-1 node-2`."
        )
    _check_node_names(node_list)
    nodes = tuple(dict.fromkeys(node_list))
    return ParsedCommand(
        pool=pool,
        nodes=nodes,
        duplicates_dropped=len(node_list) - len(nodes),
        reason=reason,
        dry_run=dry_run,
    )


def _normalize(text: str) -> str:
    """Undo what keyboards did to the text (Slack's entities are undone per word, after the split)."""
    text = _SLACK_LINK.sub(lambda m: m.group(2) or m.group(1), text)
    return text.translate(_INVISIBLE).translate(_SMART_DOUBLE).translate(_SMART_SINGLE)


def _unescape(text: str) -> str:
    """Slack escapes exactly `&`, `<` and `>`; other `&…;` sequences are the user's own text."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _split_words(text: str) -> list[_Word]:
    """Shell-like split: quotes group, whitespace separates, no escapes; an in-word apostrophe is a letter."""
    words: list[_Word] = []
    buf: list[str] = []
    in_word = quoted = lead_quoted = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            if in_word:
                words.append(_Word(_unescape("".join(buf)), quoted, lead_quoted))
                buf, in_word, quoted, lead_quoted = [], False, False, False
            i += 1
            continue
        apostrophe = ch == "'" and 0 < i < n - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
        if ch in "\"'" and not apostrophe:
            end = text.find(ch, i + 1)
            if end < 0:
                raise CommandError(_unbalanced(text, i))
            buf.append(text[i + 1 : end])
            lead_quoted = lead_quoted or not in_word
            in_word = quoted = True
            i = end + 1
            continue
        if not in_word and ch in _DASHES and i + 1 < n and text[i + 1].isalpha():
            ch = "--"  # "—reason" after autocorrect means "--reason"
        buf.append(ch)
        in_word = True
        i += 1
    if in_word:
        words.append(_Word(_unescape("".join(buf)), quoted, lead_quoted))
    return words


def _unbalanced(text: str, at: int) -> str:
    quote = text[at]
    context = text[at : at + 30] + ("…" if len(text) > at + 30 else "")
    return (
        f"The {quote} quote before {_show(context)} is never closed. Close it, or put the reason in double "
        f'quotes if it contains an apostrophe, e.g. `--reason "node\'s disk is full"`.'
    )


def _take_reason(words: list[_Word], i: int, inline: _Word | None) -> tuple[str, int]:
    """The reason after `--reason` (or in `--reason=…`); unquoted, it runs to the next option or the end."""
    if inline is None:
        if i >= len(words) or words[i].is_option:
            raise CommandError('`--reason` needs some text after it, e.g. `--reason "disk check"`.')
        first = words[i]
        i += 1
    else:
        first = inline
    parts = [first.text]
    if not first.quoted and first.text:
        while i < len(words) and not words[i].is_option:
            parts.append(words[i].text)
            i += 1
    reason = " ".join(parts).strip()
    if not reason:
        raise CommandError('The reason is empty: write why, e.g. `--reason "disk check"`, or leave `--reason` out.')
    if len(reason) > MAX_REASON_CHARS:
        raise CommandError(
            f"The reason is {len(reason)} characters long; keep it under {MAX_REASON_CHARS} "
            "(link a ticket for the details)."
        )
    return reason, i


def _one_reason(reasons: list[str]) -> str | None:
    distinct = list(dict.fromkeys(reasons))
    if len(distinct) > 1:
        shown = " and ".join(_show(r) for r in distinct[:2])
        raise CommandError(f"`--reason` is given {len(reasons)} times ({shown}); give it once.")
    return distinct[0] if distinct else None


def _unknown_flag(word: str) -> str:
    flag = word.partition("=")[0]
    close = difflib.get_close_matches(flag, _FLAGS, n=1, cutoff=0.6)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    return f'Unknown option {_show(flag)}.{hint} The options are `--reason "…"`, `--dry-run` and `--help`.'


def _check_node_names(nodes: list[str]) -> None:
    bad = list(dict.fromkeys(n for n in nodes if _name_problem(n) is not None))
    if not bad:
        return
    if len(bad) == 1:
        validate_name("node", bad[0])
    shown = "; ".join(f"{_show(n)}: {_name_problem(n)}" for n in bad[:_SHOWN_BAD_NAMES])
    more = f"; and {len(bad) - _SHOWN_BAD_NAMES} more" if len(bad) > _SHOWN_BAD_NAMES else ""
    raise CommandError(f"{len(bad)} node names are not valid: {shown}{more}. Names {NAME_RULE}.")


def _name_problem(value: str) -> str | None:
    """Why `value` is not a valid name, in a few words; None when it is valid."""
    if NAME_RE.match(value):
        return None
    if not value:
        return "it is empty"
    problems = []
    if len(value) > 63:
        problems.append(f"is {len(value)} characters long")
    if value.lower() != value:
        problems.append("has upper-case letters")
    others = [c for c in dict.fromkeys(value.lower()) if not (c.isascii() and (c.isalnum() or c in "-."))]
    if others:
        problems.append("contains " + ", ".join(repr(c) for c in others[:3]))
    if value[0] in "-.":
        problems.append(f"starts with {value[0]!r}")
    if value[-1] in "-.":
        problems.append(f"ends with {value[-1]!r}")
    text = "it " + " and ".join(problems)
    lowered = value.lower()
    if lowered != value and NAME_RE.match(lowered):
        text += f" (did you mean {_show(lowered)}?)"
    return text


def _show(value: str, limit: int = 70) -> str:
    """User text echoed back inside mrkdwn code: shortened, backticks neutralised, Slack's escaping redone."""
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    value = value.replace("`", "'").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"`{value}`"
