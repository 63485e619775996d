"""`unlock-bot demo`: the whole product on this machine, playing one conversation through real HTTP.

Someone evaluating the bot has no Slack workspace and no ModelArts project at hand, and CI needs a smoke
test of the assembled product; both get the same thing here. The ModelArts simulator, the Slack stand-in
and the bot (HTTP mode, SQLite in a temporary directory) start as `bot.sandbox.stack` starts them for the
end-to-end tests; simulated people send signed slash commands and button clicks; each step waits on real
state (the stand-in's record, the bot's database) with a timeout and prints what the people in the channel
would read. A step that does not get where it should ends the demo with a message and a non-zero status.

`python -m bot.demo say|click …` drives a demo left running by `unlock-bot demo --keep-running`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO, TypeVar

import httpx

from bot.logs import RedactSecrets, TextFormatter
from bot.requests import RequestState, UnlockRequest
from bot.sandbox.driver import SlackDriver
from bot.sandbox.records import BOT_NAME, Ephemeral, Message
from bot.sandbox.render import render_message
from bot.sandbox.stack import LocalStack, start_local_stack
from bot.sandbox.webapi import SlackStandIn
from bot.slack import ids
from bot.store import Store

T = TypeVar("T")

CHANNEL = "C0INCIDENTS"
CHANNEL_NAME = "incidents"
ALICE = "U0ALICE"
BOB = "U0BOB"
DAVE = "U0DAVE"
ONCALL_GROUP = "S0ONCALL"
USERS = {
    ALICE: {"name": "alice", "real_name": "Alice Chen"},
    BOB: {"name": "bob", "real_name": "Bob Okafor"},
    DAVE: {"name": "dave", "real_name": "Dave Smith"},
}
USERGROUPS = {ONCALL_GROUP: [ALICE]}
NAMES = {user_id: profile["name"] for user_id, profile in USERS.items()}

POLICY = """\
# The demo's policy: who may ask, who may approve, and where (see the README's policy reference).
requesters: {usergroups: [S0ONCALL]}    # the on-call group: @alice
approvers: {users: [U0BOB]}             # @bob
channels: [C0INCIDENTS]                 # #incidents only
approval:
  two_person: true                      # nobody approves their own request
  ttl_seconds: 900
limits:
  max_nodes_per_request: 50
"""

FIRST_POOL = "pool-prod-a"
SECOND_POOL = "pool-big"
STEP_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.02
WIDTH = 100
FINAL_STATES = (RequestState.SUCCEEDED, RequestState.PARTIALLY_FAILED, RequestState.FAILED)
ACTIONS = {
    "approve": ids.APPROVE_ACTION,
    "deny": ids.DENY_ACTION,
    "cancel": ids.CANCEL_ACTION,
    "retry": ids.RETRY_FAILED_ACTION,
}
REQUEST_ID = re.compile(r"`(ulk-[0-9a-z]+)`")
CONFIRMS = ' and confirms "Unlock these nodes?"'
ENV_BOT_URL = "UNLOCK_DEMO_BOT_URL"
ENV_SLACK_URL = "UNLOCK_DEMO_SLACK_URL"
ENV_SECRET = "UNLOCK_DEMO_SIGNING_SECRET"  # noqa: S105 (the name of a variable, not a secret)

log = logging.getLogger(__name__)


class DemoFailed(Exception):
    """A step did not reach the state it should have: the message says which step and what was seen."""


# ---------------------------------------------------------------------------------------------------------
# Reading the channel as its people read it


def show(msg: Message | Ephemeral) -> str:
    """A message as a Slack client shows it: people and channels by name, emoji, dates."""
    return render_message(msg.to_slack(), users=USERS, channels={CHANNEL: CHANNEL_NAME})


def person(user_id: str) -> str:
    return f"@{NAMES[user_id]}" if user_id in NAMES else user_id


def indent(text: str, prefix: str = "    ") -> list[str]:
    """Indented, and wrapped at the transcript's width the way Slack wraps a long line (hanging indent)."""
    lines: list[str] = []
    for line in text.split("\n"):
        body = line.lstrip()
        hang = prefix + " " * (len(line) - len(body) + (2 if body.startswith("• ") else 0))
        wrapped = textwrap.wrap(line, WIDTH, initial_indent=prefix, subsequent_indent=hang, break_on_hyphens=False)
        lines += wrapped or [prefix.rstrip()]
    return lines


def buttons(message: Message) -> dict[str, str]:
    """The message's buttons: action_id → value."""
    return {
        str(element.get("action_id")): str(element.get("value", ""))
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block.get("elements") or []
        if isinstance(element, dict)
    }


@dataclass
class ChannelWatcher:
    """Tells what appeared or changed in a channel since it last looked, in the order it happened.

    Each step of the demo prints `news()` once the step is done; `--keep-running` prints it as it comes.
    """

    slack: SlackStandIn
    channel: str
    step: str = ""
    _shown: dict[str, str] = field(default_factory=dict)  # ts → the text last printed for it
    _origin: dict[str, str] = field(default_factory=dict)  # ts → the step that first showed it
    _ephemerals: set[tuple[str, str]] = field(default_factory=set)

    def news(self) -> list[str]:
        entries: list[tuple[float, list[str]]] = []
        for msg in self.slack.messages(self.channel):
            entries += self._message(msg, parent=None)
            for reply in self.slack.thread(self.channel, msg.ts):
                entries += self._message(reply, parent=msg)
        for eph in self.slack.ephemerals(channel=self.channel):
            if (eph.user, eph.ts) in self._ephemerals:
                continue
            self._ephemerals.add((eph.user, eph.ts))
            who = "Slack" if eph.via == "slack" else BOT_NAME
            head = f"{who}, only visible to {person(eph.user)}:"
            entries.append((float(eph.ts), [head, *indent(show(eph))]))
        entries.sort(key=lambda entry: entry[0])
        return [line for _, lines in entries for line in lines]

    def _message(self, msg: Message, *, parent: Message | None) -> list[tuple[float, list[str]]]:
        text = show(msg)
        if self._shown.get(msg.ts) == text:
            return []
        who = BOT_NAME if msg.is_bot else person(msg.user)
        where = "" if parent is None else f" in the thread of {self._describe(parent.ts)}"
        if msg.ts not in self._shown:
            self._origin[msg.ts] = self.step
            head, when = f"{who} posts{where or ' in #' + CHANNEL_NAME}:", float(msg.ts)
        else:
            head, when = f"{who} updates {self._describe(msg.ts)}{where}:", msg.edits[-1].at if msg.edits else 0.0
        self._shown[msg.ts] = text
        return [(when, [head, *indent(text)])]

    def _describe(self, ts: str) -> str:
        step = self._origin.get(ts)
        if step and step.isdigit() and step != self.step:
            return f"its message from step {step}"
        request_id = REQUEST_ID.search(self._shown.get(ts, ""))
        return f"its message for {request_id.group(1)}" if request_id and step != self.step else "its message"


# ---------------------------------------------------------------------------------------------------------
# The conversation


@dataclass
class Conversation:
    """The simulated people, the things they act on, and the waiting that makes every step a check."""

    stack: LocalStack
    slack: SlackDriver
    store: Store
    out: TextIO
    watcher: ChannelWatcher
    timeout: float = STEP_TIMEOUT_SECONDS
    step_no: int = 0
    steps: int = 8
    title: str = ""

    def emit(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self.out)
        self.out.flush()

    def begin(self, title: str) -> None:
        self.step_no += 1
        self.title = title
        self.watcher.step = str(self.step_no)
        head = f"== Step {self.step_no} of {self.steps}: {title} "
        self.emit("", head + "=" * max(3, WIDTH - len(head)))

    def end(self) -> None:
        self.emit("", *self.watcher.news())

    def fail(self, problem: str) -> DemoFailed:
        return DemoFailed(f"step {self.step_no} ({self.title}): {problem}")

    async def until(
        self, what: str, check: Callable[[], Awaitable[T | None]], status: Callable[[], Awaitable[str]] | None = None
    ) -> T:
        """Poll `check` until it returns something truthy; fail the step after the timeout (saying `status`)."""
        deadline = time.monotonic() + self.timeout
        while True:
            result = await check()
            if result:
                return result
            if time.monotonic() > deadline:
                seen = f" ({await status()})" if status is not None else ""
                raise self.fail(f"{what} did not happen within {self.timeout:.0f} s{seen}")
            await asyncio.sleep(POLL_SECONDS)

    # -- what people do ------------------------------------------------------------------------------------

    async def command(self, user: str, text: str) -> None:
        self.emit(f"> {person(user)} types in #{CHANNEL_NAME}:  /unlock-nodes {text}")
        response = await self.slack.command(user, CHANNEL, text)
        if response.status_code != 200:
            raise self.fail(f"the bot answered the slash command with HTTP {response.status_code}")

    async def click(self, user: str, message: Message, action_id: str, label: str, note: str = "") -> None:
        current = self.stack.slack.message(CHANNEL, message.ts) or message
        value = buttons(current).get(action_id)
        if value is None:
            raise self.fail(f"the message has no [{label}] button (it shows {sorted(buttons(current))})")
        self.emit(f"> {person(user)} clicks [{label}]{note}")
        response = await self.slack.click(user, CHANNEL, message.ts, action_id, value)
        if response.status_code != 200:
            raise self.fail(f"the bot answered the click with HTTP {response.status_code}")

    async def set_failing_nodes(self, nodes: Sequence[str]) -> None:
        """Tell the simulator, over its admin API, to refuse unlocking these nodes (none: stop refusing)."""
        url = self.stack.simulator_server.url + "/_sim/faults"
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.patch(url, json={"fail_nodes": list(nodes)})
        if response.status_code != 200:
            raise self.fail(f"the simulator refused the fault change: HTTP {response.status_code} {response.text}")

    # -- what we wait for ----------------------------------------------------------------------------------

    def ephemerals(self, user: str) -> list[str]:
        return [e.text + "\n" + render_message(e.to_slack()) for e in self.stack.slack.ephemerals(user, CHANNEL)]

    async def told(self, user: str, before: int, *needles: str) -> str:
        """Wait for a new ephemeral to `user` containing every needle; return its text."""

        async def check() -> str | None:
            for text in self.ephemerals(user)[before:]:
                if all(n.lower() in text.lower() for n in needles):
                    return text
            return None

        return await self.until(f"a private reply to {person(user)} mentioning {', '.join(needles)}", check)

    def request_messages(self) -> list[Message]:
        return [m for m in self.stack.slack.messages(CHANNEL) if ids.APPROVE_ACTION in buttons(m)]

    async def new_request(self, known: set[str]) -> tuple[Message, UnlockRequest]:
        """Wait for a new approval message in the channel and return it with its stored request."""

        async def check() -> Message | None:
            fresh = [m for m in self.request_messages() if m.ts not in known]
            return fresh[-1] if fresh else None

        message = await self.until("an approval request in the channel", check)
        request = await self.store.get_request(buttons(message)[ids.APPROVE_ACTION])
        if request is None or request.state is not RequestState.PENDING:
            raise self.fail(f"the request in the channel is not pending in the database ({request})")
        return message, request

    async def finished(self, request_id: str, expected: RequestState, message: Message) -> UnlockRequest:
        """Wait for the request's final state, its results in the thread and its message showing it."""

        async def final() -> UnlockRequest | None:
            found = await self.store.get_request(request_id)
            return found if found is not None and found.state in FINAL_STATES else None

        async def state() -> str:
            found = await self.store.get_request(request_id)
            return f"it is {found.state.value}" if found is not None else "the database does not know it"

        done = await self.until(f"request {request_id} finishing", final, state)
        if done.state is not expected:
            raise self.fail(f"request {request_id} ended {done.state.value}, expected {expected.value} ({done.detail})")
        word = {RequestState.SUCCEEDED: "Succeeded", RequestState.PARTIALLY_FAILED: "Partially failed"}[expected]

        async def shown() -> bool:
            current = self.stack.slack.message(CHANNEL, message.ts)
            replies = self.stack.slack.thread(CHANNEL, message.ts)
            return (
                current is not None
                and word in render_message(current.to_slack())
                and ids.APPROVE_ACTION not in buttons(current)
                and any(f"Results for `{request_id}`" in render_message(r.to_slack()) for r in replies)
            )

        await self.until(f"the results of {request_id} in its thread and its message saying {word}", shown)
        return done

    def check_unlocked(self, pool: str, nodes: Sequence[str], *, unlocked: bool = True) -> None:
        wrong = [n for n in nodes if self.stack.simulator.is_locked(pool, n) == unlocked]
        if wrong:
            state = "still locked" if unlocked else "unlocked"
            raise self.fail(f"ModelArts shows {', '.join(wrong)} {state} in {pool}")

    def unlock_calls(self) -> int:
        return len(self.stack.simulator.calls_snapshot("batch_unlock"))

    # -- the story -----------------------------------------------------------------------------------------

    async def play(self) -> None:
        sim = self.stack.simulator
        first_nodes = sim.locked_nodes(FIRST_POOL)[:3]
        second_nodes = sim.locked_nodes(SECOND_POOL)[:4]
        failing = [second_nodes[1], second_nodes[3]]
        await self.refused_caller(first_nodes[0])
        first_msg, first = await self.request(
            f"@alice (on call) asks to unlock {len(first_nodes)} nodes",
            f'{FIRST_POOL} {" ".join(first_nodes)} --reason "INC-4711: training job stuck"',
        )
        await self.self_approval(first_msg, first)
        await self.approve(
            "@bob approves: the nodes are unlocked, the results go in the thread",
            first_msg,
            first,
            RequestState.SUCCEEDED,
        )
        self.check_unlocked(FIRST_POOL, first_nodes)
        second_msg, second = await self.request(
            f"@alice asks for {len(second_nodes)} nodes of another pool",
            f'{SECOND_POOL} {",".join(second_nodes)} --reason "INC-4712: NPU nodes stuck"',
        )
        await self.set_failing_nodes(failing)
        await self.approve(
            f"ModelArts refuses {len(failing)} of those nodes; @bob approves: partially failed",
            second_msg,
            second,
            RequestState.PARTIALLY_FAILED,
            note=f"(behind the scenes, the ModelArts simulator is set to fail {' and '.join(failing)})",
        )
        results = {r.node: r.status.value for r in await self.store.results(second.id)}
        if sorted(n for n, status in results.items() if status != "success") != sorted(failing):
            raise self.fail(f"expected exactly {failing} to fail, the database says {results}")
        self.check_unlocked(SECOND_POOL, failing, unlocked=False)
        retry_msg, retry = await self.retry(second_msg, second, failing)
        await self.set_failing_nodes([])
        await self.approve(
            "the fault is cleared and @bob approves the retry: succeeded",
            retry_msg,
            retry,
            RequestState.SUCCEEDED,
            note="(behind the scenes, the ModelArts simulator stops failing those nodes)",
        )
        self.check_unlocked(SECOND_POOL, second_nodes)
        await self.summary(len(first_nodes) + len(second_nodes))

    async def refused_caller(self, node: str) -> None:
        self.begin("someone outside the policy asks, and is refused")
        before = len(self.ephemerals(DAVE))
        await self.command(DAVE, f"{FIRST_POOL} {node}")
        await self.told(DAVE, before, "not a requester")
        if self.request_messages() or self.unlock_calls():
            raise self.fail("a refused caller's command created a request")
        self.end()

    async def request(self, title: str, text: str) -> tuple[Message, UnlockRequest]:
        self.begin(title)
        before = len(self.ephemerals(ALICE))
        known = {m.ts for m in self.request_messages()}
        await self.command(ALICE, text)
        message, request = await self.new_request(known)
        await self.told(ALICE, before, request.id, "waiting for approval")
        self.end()
        return message, request

    async def self_approval(self, message: Message, request: UnlockRequest) -> None:
        self.begin("@alice tries to approve her own request: the two-person rule says no")
        before = len(self.ephemerals(ALICE))
        await self.click(ALICE, message, ids.APPROVE_ACTION, "Approve", CONFIRMS)
        await self.told(ALICE, before, "two-person")
        pending = await self.store.get_request(request.id)
        if pending is None or pending.state is not RequestState.PENDING or self.unlock_calls():
            raise self.fail("a self-approval changed the request or unlocked something")
        self.end()

    async def approve(
        self, title: str, message: Message, request: UnlockRequest, expected: RequestState, *, note: str = ""
    ) -> None:
        self.begin(title)
        if note:
            self.emit(f"  {note}")
        await self.click(BOB, message, ids.APPROVE_ACTION, "Approve", CONFIRMS)
        await self.finished(request.id, expected, message)
        self.end()

    async def retry(
        self, message: Message, request: UnlockRequest, failing: Sequence[str]
    ) -> tuple[Message, UnlockRequest]:
        self.begin(f"@alice clicks [Retry failed nodes]: a new request for just those {len(failing)}")
        known = {m.ts for m in self.request_messages()}
        await self.click(ALICE, message, ids.RETRY_FAILED_ACTION, "Retry failed nodes")
        retry_msg, retry = await self.new_request(known)
        if retry.retry_of != request.id or sorted(retry.nodes) != sorted(failing):
            raise self.fail(f"the retry is for {retry.nodes} (retry of {retry.retry_of}), expected {failing}")
        self.end()
        return retry_msg, retry

    async def summary(self, count: int) -> None:
        events = await self.store.audit_events()
        self.emit(
            "",
            "=" * WIDTH,
            f"Done: all {count} nodes are unlocked in the simulator, {self.unlock_calls()} batch-unlock calls in all.",
            f"The audit trail holds {len(events)} events: every request, decision and per-node result, with who and",
            "when (`unlock-bot audit` exports them from a real deployment's database).",
        )


# ---------------------------------------------------------------------------------------------------------
# Running it


def intro(out: TextIO) -> None:
    lines = [
        "unlock-bot demo: one conversation in a Slack channel, played on this machine",
        "",
        "Running locally, on loopback ports: the ModelArts simulator (fake pools and nodes), a stand-in for",
        "Slack's Web API, and the bot itself as `unlock-bot serve` runs it (HTTP mode, SQLite in a temporary",
        "directory). The people are simulated: each command and click reaches the bot as a signed Slack request.",
        "",
        "The people, in Slack's IDs as the policy names them:",
        f"  @alice  {ALICE}  on call, in user group {ONCALL_GROUP}: may ask for unlocks",
        f"  @bob    {BOB}    SRE lead: may approve them",
        f"  @dave   {DAVE}   not in the policy",
        "",
        "The policy file the bot runs with:",
        *indent(POLICY.rstrip(), "  "),
        "",
        "Lines starting with > are what a person does; the rest is what Slack shows them.",
    ]
    print("\n".join(lines), file=out)


@contextlib.contextmanager
def file_logging(path: Path) -> Iterator[logging.Handler]:
    """Send every log record (the bot's, Bolt's, uvicorn's) to a file, so the transcript stays readable."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(TextFormatter())
    root, httpx_log = logging.getLogger(), logging.getLogger("httpx")
    saved = (root.handlers[:], root.level, httpx_log.level)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    httpx_log.setLevel(logging.WARNING)  # a line per HTTP call drowns the bot's own events
    try:
        yield handler
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        httpx_log.setLevel(saved[2])
        handler.close()


def quiet_uvicorn() -> None:
    """uvicorn sets up its own stderr handlers whenever a server is configured; route them to ours instead."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def converse(stack: LocalStack, out: TextIO, watcher: ChannelWatcher) -> None:
    store = await Store.connect(stack.settings.resolved_database_url)
    try:
        async with stack.driver(user_names=NAMES, channel_names={CHANNEL: CHANNEL_NAME}) as slack:
            conversation = Conversation(
                stack=stack, slack=slack, store=store, out=out, watcher=watcher, timeout=STEP_TIMEOUT_SECONDS
            )
            await conversation.play()
    finally:
        await store.close()


def how_to_drive(stack: LocalStack, log_path: Path) -> str:
    bot, slack, sim = stack.bot_url, stack.slack_server.url, stack.simulator_server.url
    python = shlex.quote(sys.executable)
    as_json = "-H 'content-type: application/json'"
    node = stack.simulator.locked_nodes(FIRST_POOL)[0] if stack.simulator.locked_nodes(FIRST_POOL) else "NODE"
    return f"""
{"=" * WIDTH}
How to drive them: the three keep running until you press Ctrl-C.

  bot             {bot}  (Slack posts to {bot}/slack/events; health: {bot}/healthz)
  Slack stand-in  {slack}  (Web API under /api/; what it recorded under /_standin/)
  ModelArts sim   {sim}  (the ModelArts API; controls under /_sim/; AK SIMAK / SK SIMSK, project sim-project)
  signing secret  {stack.signing_secret}  (random, made up for this run, valid only here)
  database        {stack.settings.resolved_database_url}
  bot log         {log_path}
  people          @alice {ALICE} (requester), @bob {BOB} (approver), @dave {DAVE}; #{CHANNEL_NAME} is {CHANNEL}

In another terminal, act as these people (requests are signed the way Slack signs them); what the bot
posts in #{CHANNEL_NAME} is printed here as it happens:

  export {ENV_BOT_URL}={bot} {ENV_SLACK_URL}={slack} {ENV_SECRET}={stack.signing_secret}
  {python} -m bot.demo say alice "{FIRST_POOL} {node} --reason 'trying it out'"
  {python} -m bot.demo say alice "{FIRST_POOL} {node} --dry-run"
  {python} -m bot.demo click bob approve          # the latest request; also: deny, cancel (alice), retry
  {python} -m bot.demo say dave help

Look inside, or make ModelArts misbehave:

  # the channel as JSON, and what only @alice saw
  curl -s '{slack}/_standin/messages?channel={CHANNEL}'
  curl -s '{slack}/_standin/ephemerals?user={ALICE}'
  # the pools (drop ?nodes=false for every node and its lock), and every ModelArts call the bot made
  curl -s '{sim}/_sim/pools?nodes=false'
  curl -s '{sim}/_sim/calls'
  # make unlocking a node fail, or half of all calls; lock a node again
  curl -s -X PATCH '{sim}/_sim/faults' {as_json} -d '{{"fail_nodes": ["{node}"]}}'
  curl -s -X PATCH '{sim}/_sim/faults' {as_json} -d '{{"error_rate": 0.5}}'
  curl -s -X PUT '{sim}/_sim/pools/{FIRST_POOL}/nodes/{node}' {as_json} -d '{{"locked": true}}'
"""


def wait_for_interrupt(watcher: ChannelWatcher, out: TextIO, banner: str) -> None:
    """Print `banner`, then the channel's news until Ctrl-C (SIGINT) or SIGTERM."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT may arrive ignored (a background job of a non-interactive shell); Ctrl-C must still stop us.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    watcher.step = "live"
    try:
        # Printed only now: whoever reads the banner and presses Ctrl-C at once gets a clean stop.
        print(banner, file=out, flush=True)
        while True:
            news = watcher.news()
            if news:
                print("", *news, sep="\n", file=out)
                out.flush()
            time.sleep(0.25)
    except KeyboardInterrupt:
        print("\nStopping the bot, the stand-in and the simulator.", file=out)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(keep_running: bool) -> int:
    """Start the three, play the conversation, print it; with `keep_running`, leave them up until Ctrl-C."""
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper):
        out.reconfigure(errors="replace")  # a terminal that cannot show an emoji gets "?", not a traceback
    workdir = Path(tempfile.mkdtemp(prefix="unlock-bot-demo-"))
    log_path = workdir / "bot.log"
    policy_path = workdir / "policy.yml"
    policy_path.write_text(POLICY, encoding="utf-8")
    keep_workdir = False
    with file_logging(log_path) as handler:
        stack: LocalStack | None = None
        watcher: ChannelWatcher | None = None
        try:
            slack = SlackStandIn(users=USERS, usergroups=USERGROUPS, channels={CHANNEL: CHANNEL_NAME})
            stack = start_local_stack(
                policy_path=policy_path,
                state_dir=workdir / "state",
                slack=slack,
                unlock_bot_log_format="text",
                unlock_bot_max_attempts=3,
                unlock_bot_retry_deadline_seconds=10.0,
                unlock_bot_http_timeout_seconds=10.0,
            )
            quiet_uvicorn()
            handler.addFilter(RedactSecrets(stack.settings.secret_values()))
            intro(out)
            watcher = ChannelWatcher(slack, CHANNEL)
            played = time.monotonic()
            asyncio.run(converse(stack, out, watcher))
            print(f"The conversation took {time.monotonic() - played:.1f} s.", file=out)
            if not keep_running:
                print("\nTry it yourself: `unlock-bot demo --keep-running` leaves the three running.", file=out)
            else:
                banner = how_to_drive(stack, log_path) + f"\nWatching #{CHANNEL_NAME} (Ctrl-C to stop)..."
                wait_for_interrupt(watcher, out, banner)
            return 0
        except DemoFailed as exc:
            keep_workdir = True
            news = watcher.news() if watcher is not None else []
            if news:
                print("", "What Slack showed after that:", *news, sep="\n", file=out)
            out.flush()
            print(f"\nunlock-bot demo failed at {exc}", file=sys.stderr)
            log_tail = tail(log_path)
            if log_tail:
                print(f"\nThe end of the bot's log ({log_path}):\n{log_tail}", file=sys.stderr)
            print(f"\nEverything it wrote is kept in {workdir}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nInterrupted.", file=sys.stderr)
            return 130
        finally:
            if stack is not None:
                stack.stop()
            if not keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# `python -m bot.demo say|click`: acting as the demo's people against a demo left running


def _user(name: str) -> str:
    by_name = {v: k for k, v in NAMES.items()}
    return by_name.get(name.lstrip("@").lower(), name)


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"{name} is not set: copy the `export …` line that `unlock-bot demo --keep-running` printed")
    return value


async def _drive(args: argparse.Namespace) -> int:
    user = _user(args.user)
    async with SlackDriver(
        _env(ENV_BOT_URL),
        _env(ENV_SECRET),
        _env(ENV_SLACK_URL),
        user_names=NAMES,
        channel_names={CHANNEL: CHANNEL_NAME},
    ) as slack:
        if args.action == "say":
            response = await slack.command(user, args.channel, " ".join(args.text))
        else:
            action_id = ACTIONS[args.button]
            async with httpx.AsyncClient(timeout=10) as http:
                listed = await http.get(f"{_env(ENV_SLACK_URL)}/_standin/messages", params={"channel": args.channel})
            listed.raise_for_status()
            target = None
            for msg in reversed(listed.json()["messages"]):
                for block in msg.get("blocks") or []:
                    for element in block.get("elements") or []:
                        if element.get("action_id") == action_id and args.request in (None, element.get("value")):
                            target = (msg["ts"], str(element["value"]))
                if target:
                    break
            if target is None:
                which = f"request {args.request}" if args.request else "any message"
                print(f"no [{args.button}] button on {which} in {args.channel}", file=sys.stderr)
                return 1
            response = await slack.click(user, args.channel, target[0], action_id, target[1])
    print(f"sent as {person(user)}: HTTP {response.status_code} {response.text}".rstrip())
    return 0 if response.status_code == 200 else 1


def drive_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot.demo",
        description="Act as a person in a demo started by `unlock-bot demo --keep-running`.",
    )
    parser.add_argument("--channel", default=CHANNEL, help=f"channel ID (default {CHANNEL})")
    actions = parser.add_subparsers(dest="action", required=True)
    say = actions.add_parser("say", help="type /unlock-nodes TEXT")
    say.add_argument("user", help="alice, bob, dave or a user ID")
    say.add_argument(
        "text", nargs=argparse.REMAINDER, help='what follows /unlock-nodes, e.g. "pool-prod-a NODE --dry-run"'
    )
    click = actions.add_parser("click", help="click a button on the latest request message that has it")
    click.add_argument("user", help="alice, bob, dave or a user ID")
    click.add_argument("button", choices=sorted(ACTIONS))
    click.add_argument("request", nargs="?", help="the request ID (default: the latest one with that button)")
    return asyncio.run(_drive(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(drive_main())
