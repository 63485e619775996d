"""The driver plays Slack: its requests verify with slack_sdk and are understood by a real Bolt AsyncApp."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.sandbox import DEFAULT_BOT_TOKEN, SlackDriver, SlackStandIn, create_app
from bot.serving import serve_in_thread

SECRET = "sandbox-signing-secret"
CHANNEL = "C0INCIDENTS"
REQUESTER, APPROVER = "U0REQUESTER", "U0APPROVER"

MODAL = {
    "type": "modal",
    "callback_id": "unlock_modal",
    "title": {"type": "plain_text", "text": "Unlock nodes"},
    "submit": {"type": "plain_text", "text": "Request"},
    "blocks": [
        {
            "type": "input",
            "block_id": "pool_block",
            "label": {"type": "plain_text", "text": "Pool"},
            "element": {"type": "plain_text_input", "action_id": "pool_input"},
        },
        {
            "type": "input",
            "block_id": "nodes_block",
            "label": {"type": "plain_text", "text": "Nodes"},
            "element": {"type": "external_select", "action_id": "node_picker", "min_query_length": 0},
        },
    ],
}
APPROVAL_BLOCKS = [
    {"type": "section", "block_id": "summary", "text": {"type": "mrkdwn", "text": "*Unlock* `pool-a`"}},
    {
        "type": "actions",
        "block_id": "decision",
        "elements": [
            {
                "type": "button",
                "action_id": "unlock_approve",
                "value": "req-1",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
            },
            {
                "type": "button",
                "action_id": "unlock_deny",
                "value": "req-1",
                "text": {"type": "plain_text", "text": "Deny"},
            },
        ],
    },
]


@dataclass
class Seen:
    events: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def of(self, kind: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(body, ctx) for k, body, ctx in self.events if k == kind]


def bolt_app(standin_url: str, seen: Seen) -> Starlette:
    """A minimal Bolt app the way unlock-bot wires one: HTTP mode, Web API pointed at the stand-in."""
    client = AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=standin_url + "/api/")
    app = AsyncApp(client=client, signing_secret=SECRET)

    def ctx(context: Any) -> dict[str, Any]:
        return {"channel_id": context.channel_id, "user_id": context.user_id, "team_id": context.team_id}

    @app.command("/unlock-nodes")
    async def on_command(ack: Any, body: dict[str, Any], context: Any) -> None:
        await ack(f"Received: {body['text']}")
        seen.events.append(("command", body, ctx(context)))

    @app.action("unlock_approve")
    async def on_approve(ack: Any, body: dict[str, Any], context: Any, respond: Any) -> None:
        await ack()
        seen.events.append(("action", body, ctx(context)))
        await respond(replace_original=True, text=f"Approved by <@{body['user']['id']}>")

    @app.shortcut("open_unlock")
    async def on_shortcut(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await client.views_open(trigger_id=body["trigger_id"], view=MODAL)

    @app.options("node_picker")
    async def on_options(ack: Any, body: dict[str, Any]) -> None:
        seen.events.append(("options", body, {}))
        names = [f"{body['value']}{i}" for i in range(3)]
        await ack(options=[{"text": {"type": "plain_text", "text": n}, "value": n} for n in names])

    @app.view("unlock_modal")
    async def on_submit(ack: Any, body: dict[str, Any], context: Any) -> None:
        await ack()
        seen.events.append(("view", body, ctx(context)))

    handler = AsyncSlackRequestHandler(app)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    return Starlette(routes=[Route("/slack/events", events, methods=["POST"])])


@dataclass
class Env:
    state: SlackStandIn
    standin_url: str
    bot_url: str
    seen: Seen


@pytest.fixture
def env() -> Iterator[Env]:
    state = SlackStandIn()
    seen = Seen()
    with serve_in_thread(create_app(state)) as standin, serve_in_thread(bolt_app(standin.url, seen)) as bot:
        yield Env(state, standin.url, bot.url, seen)


@pytest.fixture
async def driver(env: Env) -> Any:
    async with SlackDriver(env.bot_url, SECRET, env.standin_url) as drv:
        yield drv


# --- signing and delivery, checked against a recording endpoint ---------------------------------------------


@dataclass
class Capture:
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def capture() -> Iterator[tuple[Capture, str]]:
    cap = Capture()

    async def record(request: Request) -> Response:
        cap.requests.append((dict(request.headers), await request.body()))
        return JSONResponse({})

    app = Starlette(routes=[Route("/slack/events", record, methods=["POST"])])
    with serve_in_thread(app) as server:
        yield cap, server.url


async def test_signatures_verify_with_slack_sdk(capture: tuple[Capture, str]) -> None:
    cap, url = capture
    async with SlackDriver(url, SECRET, "http://127.0.0.1:9", report_acks=False) as drv:
        body = b"token=x&text=hello%20world"
        headers = drv.sign(body)
        assert SignatureVerifier(SECRET).is_valid_request(body, headers)
        assert not SignatureVerifier("another-secret").is_valid_request(body, headers)
        assert not SignatureVerifier(SECRET).is_valid_request(body + b"x", headers)
        stale = drv.sign(body, timestamp=int(time.time()) - 600)
        assert not SignatureVerifier(SECRET).is_valid_request(body, stale)
        assert SECRET not in repr(drv)

        await drv.command(REQUESTER, CHANNEL, "pool-a node-1")
        await drv.redeliver()
    (h1, b1), (h2, b2) = cap.requests
    assert SignatureVerifier(SECRET).is_valid_request(b1, h1)
    assert SignatureVerifier(SECRET).is_valid_request(b2, h2)
    assert h1["content-type"] == "application/x-www-form-urlencoded"
    assert b2 == b1 and h2["x-slack-retry-num"] == "1" and h2["x-slack-retry-reason"] == "http_timeout"
    assert "x-slack-retry-num" not in h1
    form = {k: v[0] for k, v in parse_qs(b1.decode(), keep_blank_values=True).items()}
    assert form["command"] == "/unlock-nodes" and form["text"] == "pool-a node-1"
    assert form["user_id"] == REQUESTER and form["channel_id"] == CHANNEL and form["team_id"] == "T0SANDBOX"
    assert form["token"] == "verification-token-placeholder" and form["is_enterprise_install"] == "false"
    assert form["response_url"].startswith("http://127.0.0.1:9/response/") and form["trigger_id"]


async def test_double_click_is_a_new_payload(capture: tuple[Capture, str]) -> None:
    cap, url = capture
    state = SlackStandIn()
    with serve_in_thread(create_app(state)) as standin:
        posted = state.call(
            "chat.postMessage",
            {"channel": CHANNEL, "text": "req", "blocks": APPROVAL_BLOCKS},
            authorization=f"Bearer {DEFAULT_BOT_TOKEN}",
        )
        ts = posted.body["ts"]
        async with SlackDriver(url, SECRET, standin.url) as drv:
            await drv.click(APPROVER, CHANNEL, ts, "unlock_approve", "req-1")
            first_url = drv.last_response_url(APPROVER)
            await drv.click(APPROVER, CHANNEL, ts, "unlock_approve", "req-1")
            assert drv.last_response_url(APPROVER) != first_url
    p1, p2 = (json.loads(parse_qs(body.decode())["payload"][0]) for _, body in cap.requests)
    assert p1["type"] == "block_actions" and p1["actions"][0]["action_id"] == p2["actions"][0]["action_id"]
    assert p1["trigger_id"] != p2["trigger_id"] and p1["response_url"] != p2["response_url"]
    action = p1["actions"][0]
    assert action["block_id"] == "decision" and action["type"] == "button" and action["value"] == "req-1"
    assert action["text"]["text"] == "Approve" and action["style"] == "primary" and action["action_ts"]
    assert p1["container"] == {
        "type": "message",
        "message_ts": ts,
        "channel_id": CHANNEL,
        "is_ephemeral": False,
    }
    assert p1["message"]["ts"] == ts and p1["message"]["blocks"] == APPROVAL_BLOCKS
    assert p1["user"] == {
        "id": APPROVER,
        "username": "u0approver",
        "name": "u0approver",
        "team_id": "T0SANDBOX",
    }
    assert p1["api_app_id"] and p1["team"]["id"] == "T0SANDBOX" and p1["channel"]["id"] == CHANNEL


# --- a real Bolt app receives what the driver sends ---------------------------------------------------------


async def test_bolt_receives_command(env: Env, driver: SlackDriver) -> None:
    res = await driver.command(REQUESTER, CHANNEL, "pool-a node-1 --reason 'disk check'")
    assert res.status_code == 200 and res.text == "Received: pool-a node-1 --reason 'disk check'"
    [(body, ctx)] = await env.state.wait_for_async(lambda: env.seen.of("command"))
    assert body["user_id"] == REQUESTER and body["command"] == "/unlock-nodes"
    assert ctx == {"channel_id": CHANNEL, "user_id": REQUESTER, "team_id": "T0SANDBOX"}
    assert env.state.count("auth.test") >= 1, "Bolt authorised against the stand-in"
    [eph] = env.state.ephemerals(user=REQUESTER)
    assert eph.via == "ack" and eph.text.startswith("Received:")


async def test_bolt_receives_click_and_responds(env: Env, driver: SlackDriver) -> None:
    client = AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=env.standin_url + "/api/")
    posted = await client.chat_postMessage(channel=CHANNEL, text="Unlock request", blocks=APPROVAL_BLOCKS)
    res = await driver.click(APPROVER, CHANNEL, posted["ts"], "unlock_approve", "req-1")
    assert res.status_code == 200
    [(body, ctx)] = await env.state.wait_for_async(lambda: env.seen.of("action"))
    assert body["user"]["id"] == APPROVER and body["actions"][0]["value"] == "req-1"
    assert ctx["channel_id"] == CHANNEL and ctx["user_id"] == APPROVER
    await env.state.wait_for_async(env.state.responses)
    msg = env.state.message(CHANNEL, posted["ts"])
    assert msg is not None and msg.text == f"Approved by <@{APPROVER}>" and msg.blocks == []


async def test_bolt_shortcut_modal_options_and_submission(env: Env, driver: SlackDriver) -> None:
    assert (await driver.shortcut(REQUESTER, "open_unlock")).status_code == 200
    await env.state.wait_for_async(lambda: env.state.views(REQUESTER))
    view = await driver.opened_view(REQUESTER)
    assert view is not None and view["callback_id"] == "unlock_modal"

    opts = await driver.options(REQUESTER, "node_picker", "node-", view)
    assert [o["value"] for o in opts.json()["options"]] == ["node-0", "node-1", "node-2"]
    [(body, _)] = env.seen.of("options")
    assert body["block_id"] == "nodes_block" and body["view"]["id"] == view["id"]

    res = await driver.submit_view(
        REQUESTER,
        view,
        {"pool_block": {"pool_input": "pool-a"}, "nodes_block": {"node_picker": {"type": "external_select"}}},
    )
    assert res.status_code == 200
    [(body, ctx)] = await env.state.wait_for_async(lambda: env.seen.of("view"))
    assert body["user"]["id"] == REQUESTER and ctx["user_id"] == REQUESTER
    assert body["view"]["state"]["values"]["pool_block"]["pool_input"] == {
        "type": "plain_text_input",
        "value": "pool-a",
    }
    [record] = env.state.views(REQUESTER)
    assert record.closed, "an empty ack closes the modal"


async def test_bolt_rejects_forged_and_stale_requests(env: Env, driver: SlackDriver) -> None:
    body = b"command=%2Funlock-nodes&text=x&user_id=U0EVIL&channel_id=C0INCIDENTS&team_id=T0SANDBOX"
    forged = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Signature": "v0=" + "0" * 64,
        "X-Slack-Request-Timestamp": str(int(time.time())),
    }
    assert (await driver.send_raw(body, forged)).status_code == 401
    stale = {"Content-Type": "application/x-www-form-urlencoded", **driver.sign(body, int(time.time()) - 600)}
    assert (await driver.send_raw(body, stale)).status_code == 401
    assert env.seen.events == []
