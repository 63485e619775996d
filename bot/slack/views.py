"""Block Kit builders: pure functions from domain objects to slack_sdk models.

Nothing here talks to Slack or the store. Every builder returns models whose `to_dict()` validates Slack's
own limits, and message builders also return a plain-text fallback for notifications and screen readers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ConversationFilter,
    ConversationSelectElement,
    DividerBlock,
    ExternalDataMultiSelectElement,
    ExternalDataSelectElement,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.requests import NodeResult, NodeStatus, RequestState, UnlockRequest
from bot.slack import ids
from bot.workflow import NodeState, Preview, plural

SECTION_LIMIT = 3000
SECTION_BUDGET = 2900  # leave room for the markup around a chunk of names
MESSAGE_BLOCK_LIMIT = 50
SECTIONS_PER_RESULT_MESSAGE = 12  # keeps each reply far below Slack's 40,000-character message size
NODES_SHOWN_IN_REQUEST = 60

STATE_EMOJI = {
    RequestState.PENDING: ":hourglass_flowing_sand:",
    RequestState.APPROVED: ":white_check_mark:",
    RequestState.EXECUTING: ":gear:",
    RequestState.SUCCEEDED: ":large_green_circle:",
    RequestState.PARTIALLY_FAILED: ":large_orange_circle:",
    RequestState.FAILED: ":red_circle:",
    RequestState.DENIED: ":no_entry:",
    RequestState.CANCELLED: ":heavy_multiplication_x:",
    RequestState.EXPIRED: ":hourglass:",
}

STATUS_LABEL = {NodeStatus.SUCCESS: "unlocked", NodeStatus.FAILED: "failed", NodeStatus.UNKNOWN: "unknown"}


@dataclass(frozen=True)
class Message:
    """A message to post: fallback text plus blocks."""

    text: str
    blocks: list[Block]


def escape(text: str) -> str:
    """User text inside mrkdwn: Slack needs `&`, `<` and `>` escaped, or `<!channel>` would ping everyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text)


def slack_date(when_epoch: int, fallback: str) -> str:
    """Slack renders `<!date…>` in each reader's own time zone."""
    return f"<!date^{when_epoch}^{{date_short_pretty}} {{time}}|{fallback}>"


def code_list(names: Sequence[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def counts_of(results: Sequence[NodeResult]) -> dict[NodeStatus, int]:
    counts = dict.fromkeys(NodeStatus, 0)
    for result in results:
        counts[result.status] += 1
    return counts


def counts_text(results: Sequence[NodeResult]) -> str:
    counts = counts_of(results)
    return (
        f"{counts[NodeStatus.SUCCESS]:,} unlocked, {counts[NodeStatus.FAILED]:,} failed, "
        f"{counts[NodeStatus.UNKNOWN]:,} unknown"
    )


def state_line(request: UnlockRequest, results: Sequence[NodeResult]) -> str:
    """One sentence on where the request stands, for the message's status line and its fallback text."""
    by = f" by <@{request.decided_by}>" if request.decided_by and request.decided_by != "system" else ""
    state = request.state
    emoji = STATE_EMOJI[state]
    if state is RequestState.PENDING:
        approver = " (approver must not be the requester)" if request.two_person else ""
        return f"{emoji} *Waiting for approval*{approver}"
    if state in (RequestState.APPROVED, RequestState.EXECUTING):
        return f"{emoji} *Approved*{by} — unlocking {plural(len(request.nodes), 'node')}…"
    if state is RequestState.DENIED:
        return f"{emoji} *Denied*{by}. Nothing was unlocked."
    if state is RequestState.CANCELLED:
        return f"{emoji} *Cancelled*{by}. Nothing was unlocked."
    if state is RequestState.EXPIRED:
        return f"{emoji} *Expired* without approval. Nothing was unlocked."
    word = {
        RequestState.SUCCEEDED: "Succeeded",
        RequestState.PARTIALLY_FAILED: "Partially failed",
        RequestState.FAILED: "Failed",
    }[state]
    detail = f" — {request.detail}" if request.detail else ""
    return f"{emoji} *{word}* (approved{by}): {counts_text(results)}{detail}. Details in the thread."


def request_message(
    request: UnlockRequest, *, preview: Preview | None = None, results: Sequence[NodeResult] = ()
) -> Message:
    """The approval message in the channel, drawn for the request's current state."""
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text=f"Unlock request: {request.pool}"[:150]))]
    fields = [
        mrkdwn(f"*Requested by*\n<@{request.requester_id}>"),
        mrkdwn(f"*Pool*\n`{request.pool}`"),
        mrkdwn(f"*Request*\n`{request.id}`"),
    ]
    if request.state is RequestState.PENDING:
        expires = slack_date(int(request.expires_at.timestamp()), request.expires_at.strftime("%Y-%m-%d %H:%M UTC"))
        fields.append(mrkdwn(f"*Expires*\n{expires}"))
    if request.retry_of:
        fields.append(mrkdwn(f"*Retry of*\n`{request.retry_of}`"))
    blocks.append(SectionBlock(fields=fields))
    if request.reason:
        blocks.append(SectionBlock(text=mrkdwn(f"*Reason*\n{truncate(escape(request.reason), SECTION_BUDGET)}")))
    blocks.append(SectionBlock(text=mrkdwn(nodes_summary(request.nodes))))
    if preview is not None and request.state is RequestState.PENDING:
        blocks.append(SectionBlock(text=mrkdwn(preview_text(preview))))
    blocks.append(DividerBlock())
    status = state_line(request, results)
    blocks.append(SectionBlock(text=mrkdwn(status)))
    if request.state is RequestState.PENDING:
        blocks.append(decision_buttons(request))
    elif request.state in (RequestState.PARTIALLY_FAILED, RequestState.FAILED) and results:
        blocks.append(
            ActionsBlock(
                block_id=ids.DECISION_BLOCK,
                elements=[
                    ButtonElement(text="Retry failed nodes", action_id=ids.RETRY_FAILED_ACTION, value=request.id)
                ],
            )
        )
    text = f"Unlock request {request.id} for {plural(len(request.nodes), 'node')} in {request.pool}: " + (
        status.replace("*", "")
    )
    return Message(text=text, blocks=blocks)


def decision_buttons(request: UnlockRequest) -> ActionsBlock:
    count = plural(len(request.nodes), "node")
    confirm = ConfirmObject(
        title="Unlock these nodes?",
        text=f"This unlocks {count} in {request.pool}. Other people's jobs may be scheduled onto them."[:300],
        confirm="Unlock",
        deny="Back",
    )
    return ActionsBlock(
        block_id=ids.DECISION_BLOCK,
        elements=[
            ButtonElement(
                text="Approve",
                action_id=ids.APPROVE_ACTION,
                value=request.id,
                style="primary",
                confirm=confirm,
            ),
            ButtonElement(text="Deny", action_id=ids.DENY_ACTION, value=request.id, style="danger"),
            ButtonElement(text="Cancel", action_id=ids.CANCEL_ACTION, value=request.id),
        ],
    )


def nodes_summary(nodes: Sequence[str]) -> str:
    """The full node list when it fits in one section, else the first ones and how many more."""
    full = f"*Nodes* ({len(nodes):,})\n{code_list(nodes)}"
    if len(full) <= SECTION_BUDGET:
        return full
    shown: list[str] = []
    size = 0
    for name in nodes[:NODES_SHOWN_IN_REQUEST]:
        size += len(name) + 4
        if size > SECTION_BUDGET - 200:
            break
        shown.append(name)
    rest = len(nodes) - len(shown)
    return f"*Nodes* (first {len(shown)} of {len(nodes):,})\n{code_list(shown)} … and {rest:,} more"


def preview_text(preview: Preview) -> str:
    """What approval would do to each node, read from ModelArts when the request was made."""
    if not preview.available:
        return f":grey_question: *Preview unavailable*: {truncate(preview.error or '', 500)}"
    lines = ["*Preview* (lock state read from ModelArts now)"]
    for state, label in (
        (NodeState.LOCKED, ":unlock: will be unlocked"),
        (NodeState.UNLOCKED, ":white_circle: already unlocked, no-op"),
        (NodeState.MISSING, ":x: not in the pool, will fail"),
    ):
        nodes = preview.nodes_in(state)
        if not nodes:
            continue
        names = "" if state is NodeState.LOCKED and len(nodes) > 10 else ": " + code_list(nodes[:10])
        more = f" and {len(nodes) - 10} more" if names and len(nodes) > 10 else ""
        lines.append(f"• {len(nodes):,} {label}{names}{more}")
    return truncate("\n".join(lines), SECTION_BUDGET)


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result_messages(
    request: UnlockRequest,
    results: Sequence[NodeResult],
    *,
    problems: Sequence[str] = (),
    resumed: bool = False,
) -> list[Message]:
    """The thread replies for a finished request: a summary, then every node with its status.

    Failed and unknown nodes come first, grouped by reason, so the eye lands on what needs action. Nothing
    is dropped: long lists continue in further replies, each within Block Kit's limits.
    """
    summary_lines = [f"{STATE_EMOJI[request.state]} *Results for `{request.id}`*: {counts_text(results)}."]
    if resumed:
        summary_lines.append(
            ":recycle: This request was *resumed* by another replica after the one running it stopped; "
            "nodes without a recorded result were checked against ModelArts."
        )
    summary_lines.extend(f":warning: {truncate(problem, 600)}" for problem in problems)
    request_ids = sorted({r.request_id for r in results if r.request_id})
    if request_ids:
        summary_lines.append(
            f"ModelArts request IDs: {code_list(request_ids[:10])}" + (" …" if len(request_ids) > 10 else "")
        )
    summary = truncate("\n".join(summary_lines), SECTION_BUDGET)

    sections = [summary, *node_sections(results)]
    messages: list[Message] = []
    for start in range(0, len(sections), SECTIONS_PER_RESULT_MESSAGE):
        part = sections[start : start + SECTIONS_PER_RESULT_MESSAGE]
        blocks: list[Block] = [SectionBlock(text=mrkdwn(section)) for section in part]
        page = start // SECTIONS_PER_RESULT_MESSAGE + 1
        pages = -(-len(sections) // SECTIONS_PER_RESULT_MESSAGE)
        suffix = f" ({page}/{pages})" if pages > 1 else ""
        text = f"Results for {request.id}{suffix}: {counts_text(results)}"
        messages.append(Message(text=text, blocks=blocks))
    return messages


def node_sections(results: Sequence[NodeResult]) -> list[str]:
    """Every node once, grouped by status and reason, packed into sections under Slack's size limit."""
    groups: dict[tuple[NodeStatus, str | None], list[NodeResult]] = defaultdict(list)
    for result in results:
        groups[(result.status, result.reason if result.status is not NodeStatus.SUCCESS else None)].append(result)
    order = {NodeStatus.FAILED: 0, NodeStatus.UNKNOWN: 1, NodeStatus.SUCCESS: 2}
    sections: list[str] = []
    for (status, reason), members in sorted(groups.items(), key=lambda item: (order[item[0][0]], item[0][1] or "")):
        ids_in_group = sorted({m.request_id for m in members if m.request_id})
        heading = f"*{STATUS_LABEL[status].capitalize()}* ({len(members):,})"
        if reason:
            heading += f" — {truncate(reason, 400)}"
        if ids_in_group and status is not NodeStatus.SUCCESS:
            heading += f" (request ID {code_list(ids_in_group[:3])}{' …' if len(ids_in_group) > 3 else ''})"
        sections.extend(pack_names(heading, [m.node for m in members]))
    return sections


def pack_names(heading: str, names: Sequence[str]) -> list[str]:
    """Split a heading plus a list of names into sections no longer than the budget."""
    sections: list[str] = []
    current = heading + "\n"
    first = True
    for name in names:
        piece = ("" if first else ", ") + f"`{name}`"
        if len(current) + len(piece) > SECTION_BUDGET:
            sections.append(current)
            current = f"{heading} (continued)\n`{name}`"
        else:
            current += piece
        first = False
    sections.append(current)
    return sections


def help_text(usage: str, permissions: str) -> str:
    return f"{usage}\n\n*What you may do here*\n{permissions}"


# -- the modal ------------------------------------------------------------------------------------------

MAX_OPTIONS = 100


@dataclass(frozen=True)
class Choice:
    """One pickable pool or node: `value` goes back to us, `label` is what the person sees."""

    value: str
    label: str
    keywords: str | None = None  # what a search matches; the value when None (not the label's decorations)


def unlock_modal(*, channel_id: str | None, private_metadata: str) -> View:
    """The `/unlock-nodes` modal. Options load from ModelArts as the person types, so it opens at once."""
    blocks: list[Block] = []
    if channel_id is None:
        blocks.append(
            InputBlock(
                block_id=ids.CHANNEL_BLOCK,
                label="Channel for the approval request",
                element=ConversationSelectElement(
                    action_id=ids.CHANNEL_ACTION,
                    placeholder="Choose the incident channel",
                    filter=ConversationFilter(include=["public", "private"], exclude_bot_users=True),
                ),
            )
        )
    blocks += [
        InputBlock(
            block_id=ids.POOL_BLOCK,
            label="Pool",
            element=ExternalDataSelectElement(
                action_id=ids.POOL_ACTION, placeholder="Search pools by name", min_query_length=0
            ),
        ),
        InputBlock(
            block_id=ids.NODES_BLOCK,
            label="Nodes",
            hint="Locked nodes are listed first. Choose a pool above, then type part of a node name.",
            element=ExternalDataMultiSelectElement(
                action_id=ids.NODES_ACTION, placeholder="Search nodes by name", min_query_length=0
            ),
        ),
        InputBlock(
            block_id=ids.REASON_BLOCK,
            label="Reason",
            optional=True,
            element=PlainTextInputElement(
                action_id=ids.REASON_ACTION,
                placeholder="e.g. INC-1234: nodes stuck after driver upgrade",
                max_length=500,
            ),
        ),
    ]
    return View(
        type="modal",
        callback_id=ids.MODAL_CALLBACK,
        title="Unlock nodes",
        submit="Request unlock",
        close="Close",
        private_metadata=private_metadata,
        blocks=blocks,
    )


def options(choices: Sequence[Choice], query: str) -> list[Option]:
    """Choices whose value (or keywords) contain what was typed, in the given order, at most Slack's 100."""
    needle = query.strip().lower()
    matching = [c for c in choices if needle in (c.value if c.keywords is None else c.keywords).lower()]
    return [Option(value=c.value[:150], text=PlainTextObject(text=c.label[:75])) for c in matching[:MAX_OPTIONS]]
