"""Socket Mode end to end: `unlock-bot serve --socket-mode` as a real process, driven over a local WebSocket.

The simulator, the Web API stand-in and the Socket Mode stand-in run in this process on loopback ports; the
bot is started exactly as an operator would (`python -m bot serve --socket-mode`, settings from the
environment), gets its WebSocket URL from `apps.connections.open` on the stand-in, and receives every
command and click as a Socket Mode envelope. Nothing reaches it over HTTP but the health checks.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bot.modelarts.sim_state import SimulatorState
from bot.modelarts.simulator import create_app as create_simulator_app
from bot.sandbox.socket_mode import DEFAULT_APP_TOKEN, SocketModeStandIn
from bot.sandbox.webapi import DEFAULT_BOT_TOKEN, Message, SlackStandIn
from bot.sandbox.webapi import create_app as create_standin_app
from bot.serving import RunningServer, free_port, start_server
from bot.slack import ids
from tests.e2e.conftest import APPROVER, CHANNEL, POLICY, REQUESTER, STRANGER, USERGROUPS
from tests.e2e.helpers import action_ids, block_text, button_value, message_text, wait_until

POOL = "pool-prod-a"


@dataclass
class Services:
    """What the bot talks to: ModelArts simulator, Slack Web API stand-in, Socket Mode stand-in."""

    simulator: SimulatorState
    slack: SlackStandIn
    socket: SocketModeStandIn
    simulator_server: RunningServer
    slack_server: RunningServer

    def top_level(self) -> list[Message]:
        return [m for m in self.slack.messages(CHANNEL) if not m.is_reply]

    def ephemerals(self, user: str) -> list[str]:
        return [e.text + "\n" + block_text(e.blocks) for e in self.slack.ephemerals(user=user)]


@dataclass
class BotProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def services() -> Iterator[Services]:
    simulator = SimulatorState.default()
    slack = SlackStandIn(usergroups=USERGROUPS)
    simulator_server = start_server(create_simulator_app(simulator))
    slack_server = start_server(create_standin_app(slack))
    socket = SocketModeStandIn(slack).start()
    try:
        yield Services(simulator, slack, socket, simulator_server, slack_server)
    finally:
        socket.stop()
        slack_server.stop()
        simulator_server.stop()


def bot_environment(services: Services, tmp_path: Path, app_token: str) -> dict[str, str]:
    """The operator's environment: only what Socket Mode needs (no signing secret), nothing inherited."""
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "HUAWEICLOUD_", "MODELARTS_", "UNLOCK_BOT_"))
        and k not in ("DATABASE_URL", "PORT")
        and "proxy" not in k.lower()
    }
    return {
        **inherited,
        "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
        "SLACK_APP_TOKEN": app_token,
        "SLACK_API_URL": services.slack_server.url + "/api/",
        "HUAWEICLOUD_SDK_AK": "SIMAK",
        "HUAWEICLOUD_SDK_SK": "SIMSK",
        "HUAWEICLOUD_SDK_PROJECT_ID": "sim-project",
        "MODELARTS_ENDPOINT": services.simulator_server.url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "UNLOCK_BOT_POLICY": str(policy),
        "UNLOCK_BOT_STATE_DIR": str(tmp_path / "state"),
        "UNLOCK_BOT_LOG_FORMAT": "text",
        "UNLOCK_BOT_SWEEP_INTERVAL_SECONDS": "0.25",
        "UNLOCK_BOT_MAX_ATTEMPTS": "3",
        "UNLOCK_BOT_RETRY_DEADLINE_SECONDS": "10",
        "UNLOCK_BOT_HTTP_TIMEOUT_SECONDS": "5",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def start_bot(services: Services, tmp_path: Path) -> Iterator[Callable[..., BotProcess]]:
    """Start `python -m bot serve --socket-mode`; every process started is ended when the test is."""
    started: list[BotProcess] = []

    def start(app_token: str = DEFAULT_APP_TOKEN) -> BotProcess:
        port = free_port()
        log_path = tmp_path / f"bot-{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bot", "serve", "--socket-mode", "--host", "127.0.0.1", "--port", str(port)],
                env=bot_environment(services, tmp_path, app_token),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        bot = BotProcess(process, f"http://127.0.0.1:{port}", log_path)
        started.append(bot)
        return bot

    yield start
    for bot in started:
        if bot.process.poll() is None:
            bot.process.kill()
            bot.process.wait(10)


async def wait_ready(bot: BotProcess, timeout: float = 20.0) -> dict[str, str]:
    """Poll `/readyz` until the bot says it is ready (database up, WebSocket connected)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=bot.url, timeout=2.0) as http:
        while True:
            if bot.process.poll() is not None:
                raise AssertionError(f"bot exited with {bot.process.returncode}:\n{bot.log()}")
            try:
                response = await http.get("/readyz")
                if response.status_code == 200:
                    return dict(response.json())
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"bot not ready within {timeout}s:\n{bot.log()}")
            await asyncio.sleep(0.05)


async def test_request_approve_results_over_socket_mode(
    services: Services, start_bot: Callable[..., BotProcess]
) -> None:
    bot = start_bot()
    ready = await wait_ready(bot)
    assert ready == {"status": "ready", "socket": "connected"}

    # The health endpoint is all the bot serves over HTTP; Slack's traffic arrives over the WebSocket.
    async with httpx.AsyncClient(base_url=bot.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok", "mode": "socket"}
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200 and "unlock_bot_socket_mode_connected 1.0" in metrics.text
        assert (await http.post("/slack/events", content=b"command=%2Funlock-nodes")).status_code == 404

    # The URL came from apps.connections.open on SLACK_API_URL, authenticated with the app-level token.
    opened = services.slack.calls("apps.connections.open")
    assert len(opened) == 1 and opened[0].error is None and "/link/?ticket=" in opened[0].response["url"]
    [link] = await services.socket.wait_connected()

    async with services.socket.driver(services.slack_server.url) as slack:
        # A malformed command is refused in the ack itself: an ephemeral only the caller sees.
        ack = await slack.command(REQUESTER, CHANNEL, "pool-prod-a BAD_NODE!")
        assert ack is not None and ack.get("response_type") == "ephemeral"
        assert "BAD_NODE!" in ack["text"] and "/unlock-nodes" in ack["text"]
        assert any("BAD_NODE!" in text for text in services.ephemerals(REQUESTER))

        # Someone the policy does not allow: empty ack, then an ephemeral through response_url.
        assert await slack.command(STRANGER, CHANNEL, f"{POOL} os-node-created-xzz78") is None
        told = await wait_until(lambda: services.ephemerals(STRANGER))
        assert "requester" in "\n".join(told)
        assert services.top_level() == []

        # A request: the approval message appears in the channel.
        nodes = services.simulator.locked_nodes(POOL)[:3]
        assert len(nodes) == 3
        assert await slack.command(REQUESTER, CHANNEL, f"{POOL} {' '.join(nodes)} --reason 'INC-7: stuck'") is None
        message = await wait_until(lambda: services.top_level() and services.top_level()[-1])
        assert action_ids(message) == [ids.APPROVE_ACTION, ids.DENY_ACTION, ids.CANCEL_ACTION]
        assert "INC-7: stuck" in message_text(message) and all(node in message_text(message) for node in nodes)
        request_id = button_value(message, ids.APPROVE_ACTION)
        assert services.simulator.calls_snapshot("batch_unlock") == []

        # Approve: per-node results in the thread, the parent updated to its final state.
        assert await slack.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id) is None

        def thread_text() -> str:
            return "\n".join(message_text(m) for m in services.slack.thread(CHANNEL, message.ts))

        await wait_until(lambda: "3 unlocked, 0 failed, 0 unknown" in thread_text(), timeout=15)
        assert all(thread_text().count(f"`{node}`") == 1 for node in nodes)
        parent = await wait_until(
            lambda: (
                (found := services.slack.message(CHANNEL, message.ts)) and "Succeeded" in message_text(found) and found
            )
        )
        assert f"<@{APPROVER}>" in message_text(parent) and action_ids(parent) == []
        calls = services.simulator.calls_snapshot("batch_unlock")
        assert len(calls) == 1 and calls[0].json_body == {"nodeNames": nodes, "actions": ["delete"]}
        assert not any(services.simulator.is_locked(POOL, node) for node in nodes)

        # Every envelope was acknowledged once, on the link it went out on, as Slack's protocol wants.
        envelopes = services.socket.envelopes()
        assert [e.type for e in envelopes] == ["slash_commands"] * 3 + ["interactive"]
        assert [e.accepts_response_payload for e in envelopes] == [True, True, True, False]
        assert envelopes[-1].payload["type"] == "block_actions"
        acks = services.socket.acks()
        assert [a.envelope_id for a in acks] == [e.envelope_id for e in envelopes]
        assert all(a.connection_id == link.id for a in acks)
        assert services.socket.stray_messages() == []

        # Slack asks for a refresh now and then: the bot opens a new link and goes on answering there.
        assert await services.socket.request_refresh() == 1
        await wait_until(lambda: [c for c in services.socket.connections() if c.open and c.id != link.id])
        ack = await slack.command(REQUESTER, CHANNEL, "pool-prod-a Nope")
        assert ack is not None and "Nope" in ack["text"]
        assert slack.last_ack is not None and slack.last_ack.connection_id != link.id
        assert len(services.slack.calls("apps.connections.open")) == 2

    # Slack out of reach: the bot stays alive but is no longer ready, and says why.
    services.socket.stop()
    async with httpx.AsyncClient(base_url=bot.url) as http:
        not_ready = await wait_until(lambda: _get(http, "/readyz"), timeout=10)
        assert not_ready.json()["socket"].startswith("not connected")
        assert (await http.get("/healthz")).status_code == 200
        assert "unlock_bot_socket_mode_connected 0.0" in (await http.get("/metrics")).text
    assert bot.process.poll() is None


async def _get(http: httpx.AsyncClient, path: str) -> httpx.Response | None:
    """The response to GET `path` when it is a 503, else None (for polling until a probe fails)."""
    response = await http.get(path)
    return response if response.status_code == 503 else None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_cleanly(
    services: Services, start_bot: Callable[..., BotProcess], sig: signal.Signals
) -> None:
    bot = start_bot()
    await wait_ready(bot)
    [link] = await services.socket.wait_connected()

    bot.process.send_signal(sig)
    assert bot.process.wait(15) == 0, bot.log()
    closed = next(c for c in services.socket.connections() if c.id == link.id)
    assert not closed.open and closed.close_code == 1000  # the bot closed its WebSocket itself, normally
    log = bot.log()
    assert "stopped" in log and "Traceback" not in log


async def test_refused_app_token_stops_with_a_clear_message(
    services: Services, start_bot: Callable[..., BotProcess]
) -> None:
    bot = start_bot(app_token="xapp-1-A0SANDBOX-1-wrong")
    assert bot.process.wait(20) == 1, bot.log()
    log = bot.log()
    assert "SLACK_APP_TOKEN" in log and "invalid_auth" in log
    assert "xapp-1-A0SANDBOX-1-wrong" not in log  # the token itself never reaches the logs
    assert services.socket.connections() == []


async def test_standin_hands_out_one_use_links(services: Services) -> None:
    api = services.slack_server.url + "/api/apps.connections.open"
    async with httpx.AsyncClient() as http:
        as_bot = (await http.post(api, headers={"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"})).json()
        assert as_bot == {"ok": False, "error": "not_allowed_token_type"}
        wrong = (await http.post(api, data={"token": "xapp-1-A0SANDBOX-1-wrong"})).json()
        assert wrong == {"ok": False, "error": "invalid_auth"}
        opened = (await http.post(api, headers={"Authorization": f"Bearer {DEFAULT_APP_TOKEN}"})).json()
    assert opened["ok"] is True and opened["url"].startswith(services.socket.url + "?ticket=")

    async with connect(opened["url"]) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["num_connections"] == 1
        assert hello["connection_info"] == {"app_id": "A0SANDBOX"}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(opened["url"]):
            pass
    assert refused.value.response.status_code == 401
