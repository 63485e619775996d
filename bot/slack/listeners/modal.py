"""The unlock modal: opened by `/unlock-nodes` alone or the global shortcut, fed by ModelArts as people type."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.modelarts.models import is_locked
from bot.requests import CommandError, ParsedCommand, validate_name
from bot.slack import ids, views
from bot.slack.app import SlackDeps

log = logging.getLogger(__name__)

OPTIONS_DEADLINE_SECONDS = 2.5  # Slack waits 3 s for an options response
OPTIONS_CACHE_SECONDS = 15.0
FIELD_ERROR_CHARS = 1000  # keep a field's error message short enough to read under it


async def open_modal(
    client: AsyncWebClient, deps: SlackDeps, *, trigger_id: str, channel_id: str | None, user_id: str
) -> None:
    """Open the modal straight away: `trigger_id` dies in about 3 s, and options load later anyway."""
    metadata = json.dumps({"channel_id": channel_id} if channel_id else {})
    await client.views_open(
        trigger_id=trigger_id, view=views.unlock_modal(channel_id=channel_id, private_metadata=metadata)
    )


class ChoiceCache:
    """Pools and nodes listed from ModelArts, kept a few seconds so each keystroke does not list a pool again."""

    def __init__(self, ttl: float = OPTIONS_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, list[views.Choice]]] = {}

    def get(self, key: str) -> list[views.Choice] | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, key: str, choices: list[views.Choice]) -> None:
        self._entries[key] = (time.monotonic(), choices)


class ModalChoices:
    """Pools and nodes for the modal's pickers, locked nodes first, cached briefly per pool.

    A listing that outlives Slack's 3 seconds keeps running in the background and fills the cache, so the
    next keystroke gets the choices instead of every keystroke timing out against a slow ModelArts; and
    keystrokes that arrive while a listing is under way share it rather than each listing the pool again.
    """

    def __init__(self, deps: SlackDeps) -> None:
        self.deps = deps
        self.cache = ChoiceCache()
        self._loading: dict[str, asyncio.Task[list[views.Choice]]] = {}

    async def pools(self) -> list[views.Choice]:
        return await self._load("pools", self._list_pools)

    async def nodes(self, pool: str) -> list[views.Choice]:
        return await self._load(f"nodes:{pool}", lambda: self._list_nodes(pool))

    async def _list_pools(self) -> list[views.Choice]:
        pools = await self.deps.modelarts.list_pools()
        return [
            views.Choice(
                value=p.name,
                label=f"{p.display_name} ({p.name})" if p.display_name and p.display_name != p.name else p.name,
                keywords=f"{p.name} {p.display_name or ''}",
            )
            for p in sorted(pools, key=lambda p: p.name)
        ]

    async def _list_nodes(self, pool: str) -> list[views.Choice]:
        nodes = await self.deps.modelarts.list_nodes(pool)
        ordered = sorted(nodes, key=lambda n: (not is_locked(n), n.name))
        return [views.Choice(value=n.name, label=f"🔒 {n.name} (locked)" if is_locked(n) else n.name) for n in ordered]

    async def _load(self, key: str, fetch: Callable[[], Awaitable[list[views.Choice]]]) -> list[views.Choice]:
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._fill(key, fetch), name=f"modal-options:{key}")
            task.add_done_callback(_consume_failure)  # nobody may be waiting any more when it fails
            self._loading[key] = task
        # shield: a caller giving up at Slack's deadline must not cancel the listing the cache waits for
        return await asyncio.shield(task)

    async def _fill(self, key: str, fetch: Callable[[], Awaitable[list[views.Choice]]]) -> list[views.Choice]:
        try:
            choices = await fetch()
            self.cache.put(key, choices)
            return choices
        finally:
            self._loading.pop(key, None)

    async def within_deadline(self, load: Awaitable[list[views.Choice]], **context: str) -> list[views.Choice]:
        """Slack shows nothing after 3 s anyway: an empty list beats an error."""
        try:
            async with asyncio.timeout(OPTIONS_DEADLINE_SECONDS):
                return await load
        except TimeoutError:
            log.warning("options too slow", extra={"event": "options_slow", **context})
        except Exception as exc:  # any failure: the picker shows "no results", never Slack's error banner
            log.warning("options unavailable", extra={"event": "options_failed", "error": str(exc), **context})
        return []


@dataclass(frozen=True)
class Submission:
    """What the person entered in the modal."""

    channel_id: str | None
    pool: str | None
    nodes: tuple[str, ...]
    reason: str | None


def read_submission(view: dict[str, Any]) -> Submission:
    values = view.get("state", {}).get("values", {})
    metadata = json.loads(view.get("private_metadata") or "{}")
    picked_channel = (values.get(ids.CHANNEL_BLOCK, {}).get(ids.CHANNEL_ACTION) or {}).get("selected_conversation")
    options = (values.get(ids.NODES_BLOCK, {}).get(ids.NODES_ACTION) or {}).get("selected_options") or []
    reason = ((values.get(ids.REASON_BLOCK, {}).get(ids.REASON_ACTION) or {}).get("value") or "").strip()
    return Submission(
        channel_id=metadata.get("channel_id") or picked_channel,
        pool=selected_pool(values),
        nodes=tuple(dict.fromkeys(str(option["value"]) for option in options)),
        reason=reason or None,
    )


def missing_fields(submission: Submission) -> dict[str, str]:
    """What is empty or malformed, by block: Slack shows each message under its own field."""
    errors: dict[str, str] = {}
    if not submission.channel_id:
        errors[ids.CHANNEL_BLOCK] = "Choose the channel where the request will be approved."
    if not submission.pool:
        errors[ids.POOL_BLOCK] = "Choose a pool."
    else:
        problem = name_problem("pool", [submission.pool])
        if problem:
            errors[ids.POOL_BLOCK] = problem
    if not submission.nodes:
        errors[ids.NODES_BLOCK] = "Choose at least one node."
    else:
        # The pickers only offer ModelArts' names, but the payload is the client's: check as the command does.
        problem = name_problem("node", submission.nodes)
        if problem:
            errors[ids.NODES_BLOCK] = problem
    return errors


def name_problem(kind: str, values: Sequence[str]) -> str | None:
    for value in values:
        try:
            validate_name(kind, value)
        except CommandError as exc:
            return field_error(str(exc))
    return None


def field_error(text: str) -> str:
    """A refusal written for mrkdwn, as plain text under a field (Slack shows error text verbatim)."""
    plain = text.removeprefix(":no_entry: ").replace("`", "")
    return plain if len(plain) <= FIELD_ERROR_CHARS else plain[: FIELD_ERROR_CHARS - 1] + "…"


async def refusal_errors(
    deps: SlackDeps, submission: Submission, user_id: str, *, picked_channel: bool
) -> dict[str, str]:
    """The policy's answer, on the field it concerns: the channel (when the modal asked for one), pool or nodes."""
    assert submission.pool is not None and submission.channel_id is not None
    refusal = await deps.workflow.vet(
        submission.pool, len(submission.nodes), user_id=user_id, channel_id=submission.channel_id
    )
    if refusal is None:
        return {}
    block = ids.NODES_BLOCK if refusal.about == "nodes" else ids.POOL_BLOCK
    allowed_channels = deps.workflow.policy.for_pool(submission.pool).channels
    if picked_channel and allowed_channels and submission.channel_id not in allowed_channels:
        block = ids.CHANNEL_BLOCK
    return {block: field_error(refusal.text)}


def register(app: AsyncApp, deps: SlackDeps) -> None:
    choices = ModalChoices(deps)

    @app.shortcut(ids.SHORTCUT_CALLBACK)
    async def on_shortcut(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await open_modal(client, deps, trigger_id=body["trigger_id"], channel_id=None, user_id=body["user"]["id"])

    @app.options(ids.POOL_ACTION)
    async def on_pool_options(ack: AsyncAck, body: dict[str, Any]) -> None:
        found = await choices.within_deadline(choices.pools())
        await ack(options=views.options(found, body.get("value", "")))

    @app.options(ids.NODES_ACTION)
    async def on_node_options(ack: AsyncAck, body: dict[str, Any]) -> None:
        pool = selected_pool((body.get("view") or {}).get("state", {}).get("values", {}))
        found = await choices.within_deadline(choices.nodes(pool), pool=pool) if pool else []
        await ack(options=views.options(found, body.get("value", "")))

    @app.view(ids.MODAL_CALLBACK)
    async def on_submit(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        user_id = body["user"]["id"]
        submission = read_submission(view)
        errors = missing_fields(submission)
        if not errors:
            picked_channel = not json.loads(view.get("private_metadata") or "{}").get("channel_id")
            errors = await refusal_errors(deps, submission, user_id, picked_channel=picked_channel)
        if errors or submission.pool is None or submission.channel_id is None:
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        command = ParsedCommand(pool=submission.pool, nodes=submission.nodes, reason=submission.reason)
        try:
            reply = await deps.workflow.submit(
                command,
                team_id=(body.get("team") or {}).get("id", ""),
                channel_id=submission.channel_id,
                user_id=user_id,
            )
            text = reply.text
        except Exception:
            log.exception("request failed", extra={"event": "submit_failed", "user_id": user_id})
            text = (
                ":boom: Something went wrong while creating your request; nothing was unlocked. "
                "Please try again, and tell the bot's operators if it keeps happening."
            )
        await deps.workflow.notifier.whisper(submission.channel_id, user_id, text)


def _consume_failure(task: asyncio.Task[list[views.Choice]]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("background listing failed", extra={"event": "options_load_failed", "error": str(task.exception())})


def selected_pool(values: dict[str, Any]) -> str | None:
    option = (values.get(ids.POOL_BLOCK, {}).get(ids.POOL_ACTION) or {}).get("selected_option")
    return str(option["value"]) if option else None
