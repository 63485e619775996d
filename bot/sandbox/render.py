"""Block Kit as a person reads it, in plain text: for the demo transcript and for readable test failures.

mrkdwn is kept as written (`*bold*` stays `*bold*`), buttons become `[Approve]`, context blocks become
small indented lines, a header is underlined, fields go two per line, a divider is a rule. When a message
has blocks, Slack shows the blocks (the `text` is only the notification fallback), and so do we.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.sandbox.webapi import SlackStandIn

RULE = "-" * 40
FIELD_WIDTH = 38
_SPECIAL = re.compile(r"<([@#!])([^|>]*)(?:\|([^>]*))?>")


def _text(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return "" if obj is None else str(obj)


def _element(element: Any) -> str:
    """One interactive element as a user sees it: a button label, a menu with its placeholder…"""
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind == "button":
        return f"[{_text(element.get('text'))}]"
    if kind == "overflow":
        return "[...]"
    if kind in ("image",):
        return f"[image: {element.get('alt_text', '')}]"
    if kind in ("mrkdwn", "plain_text"):
        return _text(element)
    if kind in ("checkboxes", "radio_buttons"):
        return " ".join(f"( ) {_text(o.get('text'))}" for o in element.get("options") or [] if isinstance(o, dict))
    label = _text(element.get("placeholder")) or _text((element.get("initial_option") or {}).get("text"))
    if kind and (kind.endswith("_select") or kind.startswith("multi_")):
        return f"[{label or 'Select'} v]"
    if kind in ("plain_text_input", "rich_text_input", "email_text_input", "number_input", "url_text_input"):
        return f"[{label or '...'}]" if not element.get("initial_value") else f"[{element['initial_value']}]"
    if kind in ("datepicker", "timepicker", "datetimepicker"):
        return f"[{element.get('initial_date') or element.get('initial_time') or label or kind}]"
    return f"[{kind}]"


def _rich_inline(elements: Any) -> str:
    out: list[str] = []
    for el in elements or []:
        if not isinstance(el, dict):
            continue
        kind = el.get("type")
        if kind == "text":
            out.append(str(el.get("text", "")))
        elif kind == "link":
            out.append(str(el.get("text") or el.get("url", "")))
        elif kind == "user":
            out.append(f"<@{el.get('user_id', '')}>")
        elif kind == "usergroup":
            out.append(f"<!subteam^{el.get('usergroup_id', '')}>")
        elif kind == "channel":
            out.append(f"<#{el.get('channel_id', '')}>")
        elif kind == "emoji":
            out.append(f":{el.get('name', '')}:")
        elif kind == "broadcast":
            out.append(f"@{el.get('range', '')}")
    return "".join(out)


def _rich_text(block: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for part in block.get("elements") or []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "rich_text_section":
            lines += _rich_inline(part.get("elements")).split("\n")
        elif kind == "rich_text_list":
            indent = "  " * int(part.get("indent", 0))
            for i, item in enumerate(part.get("elements") or [], start=1):
                bullet = f"{i}." if part.get("style") == "ordered" else "•"
                lines.append(f"{indent}{bullet} {_rich_inline((item or {}).get('elements'))}")
        elif kind == "rich_text_preformatted":
            lines += ["```", *_rich_inline(part.get("elements")).split("\n"), "```"]
        elif kind == "rich_text_quote":
            lines += [f"> {line}" for line in _rich_inline(part.get("elements")).split("\n")]
    return lines


def _fields(fields: list[Any]) -> list[str]:
    lines: list[str] = []
    for i in range(0, len(fields), 2):
        left = _text(fields[i])
        right = _text(fields[i + 1]) if i + 1 < len(fields) else ""
        left_lines, right_lines = left.split("\n"), right.split("\n")
        for j in range(max(len(left_lines), len(right_lines))):
            a = left_lines[j] if j < len(left_lines) else ""
            b = right_lines[j] if j < len(right_lines) else ""
            lines.append(f"{a:<{FIELD_WIDTH}}  {b}".rstrip() if b else a)
    return lines


def render_block(block: Any) -> list[str]:
    """The lines one block shows."""
    if not isinstance(block, dict):
        return []
    kind = block.get("type")
    if kind == "section":
        lines = _text(block.get("text")).split("\n") if block.get("text") else []
        lines += _fields(list(block.get("fields") or []))
        if isinstance(block.get("accessory"), dict):
            accessory = _element(block["accessory"])
            if lines and block["accessory"].get("type") != "image":
                lines[0] = f"{lines[0]}  {accessory}"
            else:
                lines.append(accessory)
        return lines
    if kind == "header":
        title = _text(block.get("text"))
        return [title, "=" * len(title)]
    if kind == "context":
        parts = [_element(e) for e in block.get("elements") or []]
        return [f"  {line}" for line in "  ".join(p for p in parts if p).split("\n")]
    if kind == "actions":
        return [" ".join(_element(e) for e in block.get("elements") or [])]
    if kind == "divider":
        return [RULE]
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    if kind == "input":
        optional = " (optional)" if block.get("optional") else ""
        lines = [f"{_text(block.get('label'))}{optional}: {_element(block.get('element'))}"]
        if block.get("hint"):
            lines.append(f"  {_text(block.get('hint'))}")
        return lines
    if kind == "rich_text":
        return _rich_text(block)
    if kind == "markdown":
        return str(block.get("text", "")).split("\n")
    if kind == "file":
        return [f"[file {block.get('external_id', '')}]"]
    return [f"[{kind} block]"]


def _attachment(att: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if att.get("pretext"):
        lines += str(att["pretext"]).split("\n")
    body: list[str] = []
    for key in ("author_name", "title"):
        if att.get(key):
            body.append(str(att[key]))
    if att.get("text"):
        body += str(att["text"]).split("\n")
    for f in att.get("fields") or []:
        if isinstance(f, dict):
            body.append(f"{f.get('title', '')}: {f.get('value', '')}")
    for block in att.get("blocks") or []:
        body += render_block(block)
    if att.get("footer"):
        body.append(f"  {att['footer']}")
    if not body and att.get("fallback"):
        body.append(str(att["fallback"]))
    return lines + [f"| {line}" for line in body]


def render_message(
    msg: dict[str, Any],
    *,
    users: Mapping[str, Mapping[str, str]] | None = None,
    channels: Mapping[str, str] | None = None,
) -> str:
    """A message (`text`, `blocks`, `attachments`) as plain text.

    Given `users` (ID → profile with `name`) and/or `channels` (ID → name), it reads as a Slack client shows
    it: mentions by name, dates, entities and emoji resolved (see `resolve_mentions`) before the layout.
    """
    if users is not None or channels is not None:
        msg = _as_shown(msg, users or {}, channels or {})
    blocks = msg.get("blocks") or []
    lines: list[str] = []
    if blocks:
        for block in blocks:
            lines += render_block(block)
    elif msg.get("text"):
        lines += str(msg["text"]).split("\n")
    for att in msg.get("attachments") or []:
        if isinstance(att, dict):
            lines += _attachment(att)
    return "\n".join(lines)


def render_view(view: dict[str, Any]) -> str:
    """A modal: title bar, blocks, then its close/submit buttons."""
    title = _text(view.get("title"))
    buttons = [f"[{_text(view[k])}]" for k in ("close", "submit") if view.get(k)]
    lines = [f"+ {title} +", *[line for b in view.get("blocks") or [] for line in render_block(b)]]
    if buttons:
        lines.append(" ".join(buttons))
    return "\n".join(lines)


EMOJI = {
    "boom": "💥",
    "gear": "⚙️",
    "grey_question": "❔",
    "heavy_multiplication_x": "✖️",
    "hourglass": "⌛",
    "hourglass_flowing_sand": "⏳",
    "large_green_circle": "🟢",
    "large_orange_circle": "🟠",
    "no_entry": "⛔",
    "recycle": "♻️",
    "red_circle": "🔴",
    "twisted_rightwards_arrows": "🔀",
    "unlock": "🔓",
    "warning": "⚠️",
    "white_check_mark": "✅",
    "white_circle": "⚪",
    "x": "❌",
}
_EMOJI = re.compile(r":([a-z0-9_+-]+):")


def resolve_mentions(
    text: str, users: Mapping[str, Mapping[str, str]] | None = None, channels: Mapping[str, str] | None = None
) -> str:
    """What a Slack client shows for `<@U…>`, `<#C…>`, `<!subteam^S…>`, `<!date^…|fallback>`, `&lt;` and `:x:`.

    Known users become `@name` and known channels `#name`; unknown IDs are left as written. Dates show
    their fallback text (the client would format them in the reader's time zone); the emoji the bot uses
    become the characters (others keep their `:name:`).
    """
    users = users or {}
    channels = channels or {}

    def replace(match: re.Match[str]) -> str:
        sigil, target, label = match.group(1), match.group(2), match.group(3)
        if sigil == "@" and (target in users or label):
            return "@" + (users.get(target, {}).get("name") or label or target)
        if sigil == "#" and (target in channels or label):
            return "#" + (channels.get(target) or label or target)
        if sigil == "!" and target.startswith("date^") and label is not None:
            return label
        if sigil == "!" and target.startswith("subteam^") and label:
            return label
        if sigil == "!" and target in ("here", "channel", "everyone"):
            return "@" + target
        return match.group(0)

    text = _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), _SPECIAL.sub(replace, text))
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _as_shown(obj: Any, users: Mapping[str, Mapping[str, str]], channels: Mapping[str, str]) -> Any:
    """A copy of a message whose every `text` string is resolved, so layout sees the names it will show."""
    if isinstance(obj, dict):
        return {
            key: resolve_mentions(value, users, channels)
            if key == "text" and isinstance(value, str)
            else _as_shown(value, users, channels)
            for key, value in obj.items()
        }
    if isinstance(obj, list):
        return [_as_shown(item, users, channels) for item in obj]
    return obj


def _indent(text: str, prefix: str) -> list[str]:
    return [f"{prefix}{line}" if line else prefix.rstrip() for line in text.split("\n")]


def render_channel(state: SlackStandIn, channel: str) -> str:
    """A channel as a person scrolling it would read it (the named user's ephemerals included for all).

    Messages in order, edits applied (marked "(edited)"), thread replies indented under their parent,
    ephemerals marked "(only visible to U…)"; users and channels the stand-in knows by name are shown by
    name (`@alice`, `#incidents`), as a Slack client shows them.
    """
    from bot.sandbox.records import BOT_NAME

    def person(user_id: str) -> str:
        name = state.users.get(user_id, {}).get("name")
        return f"@{name}" if name else user_id

    def shown(msg: dict[str, Any]) -> str:
        return render_message(msg, users=state.users, channels=state.channels)

    entries: list[tuple[float, list[str]]] = []
    for msg in state.messages(channel):
        who = BOT_NAME if msg.is_bot else person(msg.user)
        edited = " (edited)" if msg.edits else ""
        lines = [f"{who}:{edited}", *_indent(shown(msg.to_slack()), "  ")]
        for reply in state.thread(channel, msg.ts):
            reply_who = BOT_NAME if reply.is_bot else person(reply.user)
            lines.append(f"    ↳ {reply_who}:{' (edited)' if reply.edits else ''}")
            lines += _indent(shown(reply.to_slack()), "        ")
        entries.append((float(msg.ts), lines))
    for eph in state.ephemerals(channel=channel):
        who = "Slack" if eph.via == "slack" else BOT_NAME
        where = ", in thread" if eph.thread_ts else ""
        lines = [
            f"{who}: (only visible to {person(eph.user)}{where})",
            *_indent(shown(eph.to_slack()), "  "),
        ]
        entries.append((float(eph.ts), lines))
    entries.sort(key=lambda e: e[0])
    return "\n".join(line for _, lines in entries for line in lines)
