"""Plain-text rendering of Block Kit, as the demo transcript prints it."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.sandbox import DEFAULT_BOT_TOKEN, SlackStandIn, render_channel, render_message, render_view

AUTH = f"Bearer {DEFAULT_BOT_TOKEN}"


def approval_message() -> dict[str, Any]:
    blocks = [
        HeaderBlock(text="Unlock request"),
        SectionBlock(text="*pool-a*: 2 nodes\n_reason_: disk check"),
        SectionBlock(
            fields=[
                MarkdownTextObject(text="*Requester*\n<@U0REQ>"),
                MarkdownTextObject(text="*State*\npending"),
                MarkdownTextObject(text="*Nodes*\n2"),
            ]
        ),
        ContextBlock(elements=[MarkdownTextObject(text="Request `req-1` · expires in 15 min")]),
        DividerBlock(),
        ActionsBlock(
            elements=[
                ButtonElement(text="Approve", action_id="unlock_approve", value="req-1", style="primary"),
                ButtonElement(text="Deny", action_id="unlock_deny", value="req-1", style="danger"),
            ]
        ),
    ]
    return {"text": "Unlock request for pool-a", "blocks": [b.to_dict() for b in blocks]}


def test_render_message_blocks() -> None:
    assert render_message(approval_message()) == "\n".join(
        [
            "Unlock request",
            "==============",
            "*pool-a*: 2 nodes",
            "_reason_: disk check",
            f"{'*Requester*':<38}  *State*",
            f"{'<@U0REQ>':<38}  pending",
            "*Nodes*",
            "2",
            "  Request `req-1` · expires in 15 min",
            "-" * 40,
            "[Approve] [Deny]",
        ]
    )


def test_render_text_only_rich_text_accessory_and_attachments() -> None:
    assert render_message({"text": "plain *mrkdwn* kept"}) == "plain *mrkdwn* kept"
    rich = {
        "type": "rich_text",
        "elements": [
            {"type": "rich_text_section", "elements": [{"type": "text", "text": "Nodes:"}]},
            {
                "type": "rich_text_list",
                "style": "ordered",
                "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": "node-1"}]},
                    {"type": "rich_text_section", "elements": [{"type": "user", "user_id": "U0A"}]},
                ],
            },
            {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": "a | b"}]},
        ],
    }
    section = {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "Cancel?"},
        "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Cancel"}, "action_id": "c"},
    }
    attachment = {"color": "#f00", "title": "Failures", "text": "node-2: locked"}
    out = render_message({"text": "fallback", "blocks": [rich, section], "attachments": [attachment]})
    assert out == "\n".join(
        [
            "Nodes:",
            "1. node-1",
            "2. <@U0A>",
            "```",
            "a | b",
            "```",
            "Cancel?  [Cancel]",
            "| Failures",
            "| node-2: locked",
        ]
    )


def test_render_view() -> None:
    view = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Unlock nodes"},
        "submit": {"type": "plain_text", "text": "Request"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "label": {"type": "plain_text", "text": "Pool"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "p",
                    "placeholder": {"type": "plain_text", "text": "pool-a"},
                },
            },
            {
                "type": "input",
                "optional": True,
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "r"},
            },
        ],
    }
    assert render_view(view) == "+ Unlock nodes +\nPool: [pool-a]\nReason (optional): [...]\n[Cancel] [Request]"


def test_render_channel_threads_edits_and_ephemerals() -> None:
    state = SlackStandIn()
    parent = state.call("chat.postMessage", {"channel": "C0X", **approval_message()}, authorization=AUTH).body
    state.call(
        "chat.postMessage",
        {"channel": "C0X", "thread_ts": parent["ts"], "text": "node-1: success"},
        authorization=AUTH,
    )
    state.call(
        "chat.postEphemeral",
        {"channel": "C0X", "user": "U0EVE", "text": "You may not approve."},
        authorization=AUTH,
    )
    state.call(
        "chat.update",
        {"channel": "C0X", "ts": parent["ts"], "text": "Approved by <@U0APP>", "blocks": []},
        authorization=AUTH,
    )
    state.call("chat.postMessage", {"channel": "C0OTHER", "text": "elsewhere"}, authorization=AUTH)

    assert render_channel(state, "C0X") == "\n".join(
        [
            "unlock-bot: (edited)",
            "  Approved by <@U0APP>",
            "    ↳ unlock-bot:",
            "        node-1: success",
            "unlock-bot: (only visible to U0EVE)",
            "  You may not approve.",
        ]
    )


def test_render_channel_reads_as_a_slack_client_shows_it() -> None:
    state = SlackStandIn(users={"U0ALICE": {"name": "alice"}}, channels={"C0INC": "incidents"})
    fields = [
        MarkdownTextObject(text="*Requested by*\n<@U0ALICE>"),
        MarkdownTextObject(text="*Expires*\n<!date^1700000000^{date_short_pretty}|2023-11-14 22:13 UTC>"),
    ]
    blocks = [
        SectionBlock(fields=fields),
        SectionBlock(text=":no_entry: <@U0BOB> in <#C0INC>: a &lt;b&gt; &amp; c :not_an_emoji:"),
    ]
    state.call(
        "chat.postMessage",
        {"channel": "C0INC", "text": "x", "blocks": [b.to_dict() for b in blocks]},
        authorization=AUTH,
    )
    state.call("chat.postEphemeral", {"channel": "C0INC", "user": "U0ALICE", "text": "hi"}, authorization=AUTH)

    assert render_channel(state, "C0INC") == "\n".join(
        [
            "unlock-bot:",
            f"  {'*Requested by*':<38}  *Expires*",
            f"  {'@alice':<38}  2023-11-14 22:13 UTC",  # resolved before the columns are laid out
            "  ⛔ <@U0BOB> in #incidents: a <b> & c :not_an_emoji:",  # unknown users stay as written
            "unlock-bot: (only visible to @alice)",
            "  hi",
        ]
    )
