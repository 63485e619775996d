"""The unlock modal: opened by `/unlock-nodes` alone or the global shortcut, fed by ModelArts as people type."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.modelarts.errors import ModelArtsError
from bot.modelarts.models import is_locked
from bot.requests import ParsedCommand
from bot.slack import ids, views
from bot.slack.app import SlackDeps

log = logging.getLogger(__name__)

OPTIONS_DEADLINE_SECONDS = 2.5  # Slack waits 3 s for an options response
OPTIONS_CACHE_SECONDS = 15.0


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
    """Pools and nodes for the modal's pickers, locked nodes first, cached briefly per pool."""

    def __init__(self, deps: SlackDeps) -> None:
        self.deps = deps
        self.cache = ChoiceCache()

    async def pools(self) -> list[views.Choice]:
        cached = self.cache.get("pools")
        if cached is None:
            pools = await self.deps.modelarts.list_pools()
            cached = [
                views.Choice(value=p.name, label=f"{p.display_name} ({p.name})" if p.display_name else p.name)
                for p in sorted(pools, key=lambda p: p.name)
            ]
            self.cache.put("pools", cached)
        return cached

    async def nodes(self, pool: str) -> list[views.Choice]:
        cached = self.cache.get(f"nodes:{pool}")
        if cached is None:
            nodes = await self.deps.modelarts.list_nodes(pool)
            ordered = sorted(nodes, key=lambda n: (not is_locked(n), n.name))
            cached = [
                views.Choice(value=n.name, label=f"🔒 {n.name} (locked)" if is_locked(n) else n.name) for n in ordered
            ]
            self.cache.put(f"nodes:{pool}", cached)
        return cached

    async def within_deadline(self, load: Awaitable[list[views.Choice]], **context: str) -> list[views.Choice]:
        """Slack shows nothing after 3 s anyway: an empty list beats an error."""
        try:
            async with asyncio.timeout(OPTIONS_DEADLINE_SECONDS):
                return await load
        except (ModelArtsError, TimeoutError) as exc:
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
    errors: dict[str, str] = {}
    if not submission.channel_id:
        errors[ids.CHANNEL_BLOCK] = "Choose the channel where the request will be approved."
    if not submission.pool:
        errors[ids.POOL_BLOCK] = "Choose a pool."
    if not submission.nodes:
        errors[ids.NODES_BLOCK] = "Choose at least one node."
    return errors


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
        if not errors and submission.pool and submission.channel_id:
            refusal = await deps.workflow.vet(
                submission.pool, len(submission.nodes), user_id=user_id, channel_id=submission.channel_id
            )
            if refusal is not None:
                block = ids.NODES_BLOCK if refusal.about == "nodes" else ids.POOL_BLOCK
                errors[block] = refusal.text.removeprefix(":no_entry: ")[:2000]
        if errors or submission.pool is None or submission.channel_id is None:
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        command = ParsedCommand(pool=submission.pool, nodes=submission.nodes, reason=submission.reason)
        reply = await deps.workflow.submit(
            command, team_id=(body.get("team") or {}).get("id", ""), channel_id=submission.channel_id, user_id=user_id
        )
        await deps.workflow.notifier.whisper(submission.channel_id, user_id, reply.text)


def selected_pool(values: dict[str, Any]) -> str | None:
    option = (values.get(ids.POOL_BLOCK, {}).get(ids.POOL_ACTION) or {}).get("selected_option")
    return str(option["value"]) if option else None
