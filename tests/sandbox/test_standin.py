"""The Slack stand-in, driven over real loopback HTTP by slack_sdk's own AsyncWebClient."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, SectionBlock
from slack_sdk.web.async_client import AsyncWebClient

from bot.sandbox import DEFAULT_BOT_TOKEN, SlackStandIn, create_app
from bot.sandbox.webapi import mint_trigger_id
from bot.serving import serve_in_thread

TS_RE = re.compile(r"^\d{10}\.\d{6}$")
CHANNEL = "C0INCIDENTS"


@dataclass
class Env:
    state: SlackStandIn
    url: str

    def client(self, token: str | None = DEFAULT_BOT_TOKEN, *, retry: bool = False) -> AsyncWebClient:
        handlers = [AsyncRateLimitErrorRetryHandler(max_retry_count=2)] if retry else []
        return AsyncWebClient(token=token, base_url=self.url + "/api/", retry_handlers=handlers)


@pytest.fixture
def env() -> Iterator[Env]:
    state = SlackStandIn(
        usergroups={"S0ONCALL": ["U0ALICE", "U0BOB"]},
        retry_after_seconds=0,  # slack_sdk then waits int(0) + random() < 1 s
    )
    with serve_in_thread(create_app(state)) as server:
        yield Env(state, server.url)


def approval_blocks(request_id: str = "req-1") -> list[dict[str, object]]:
    return [
        SectionBlock(block_id="summary", text="*Unlock request* `pool-a`: node-1, node-2").to_dict(),
        ActionsBlock(
            block_id="decision",
            elements=[
                ButtonElement(text="Approve", action_id="unlock_approve", value=request_id, style="primary"),
                ButtonElement(text="Deny", action_id="unlock_deny", value=request_id, style="danger"),
            ],
        ).to_dict(),
    ]


async def test_post_thread_reply_and_update(env: Env) -> None:
    client = env.client()
    posted = await client.chat_postMessage(channel=CHANNEL, text="Unlock request", blocks=approval_blocks())
    assert posted["ok"] and posted["channel"] == CHANNEL
    parent_ts = posted["ts"]
    assert TS_RE.match(parent_ts)
    assert posted["message"]["blocks"][1]["elements"][0]["action_id"] == "unlock_approve"
    assert posted["message"]["bot_id"]

    reply = await client.chat_postMessage(channel=CHANNEL, thread_ts=parent_ts, text="node-1: success")
    orphan = await client.chat_postMessage(channel=CHANNEL, thread_ts="1000000000.000001", text="x")
    assert orphan["ok"], "Slack accepts an unknown thread_ts silently"
    assert float(parent_ts) < float(reply["ts"]) < float(orphan["ts"])

    updated = await client.chat_update(channel=CHANNEL, ts=parent_ts, text="Approved by <@U0BOB>", blocks=[])
    assert updated["ts"] == parent_ts and updated["text"] == "Approved by <@U0BOB>"

    [top] = env.state.messages(CHANNEL)
    assert top.ts == parent_ts and top.text == "Approved by <@U0BOB>" and top.blocks == []
    assert len(top.edits) == 1 and top.edits[0].blocks == approval_blocks()
    assert [m.text for m in env.state.thread(CHANNEL, parent_ts)] == ["node-1: success"]

    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel=CHANNEL, ts="1000000000.000002", text="nope")
    assert err.value.response["error"] == "message_not_found"


async def test_update_keeps_blocks_when_omitted_and_refuses_user_messages(env: Env) -> None:
    client = env.client()
    posted = await client.chat_postMessage(channel=CHANNEL, text="t", blocks=approval_blocks())
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="t2")
    msg = env.state.message(CHANNEL, posted["ts"])
    assert msg is not None and msg.text == "t2" and msg.blocks == approval_blocks()

    human = env.state.add_user_message(CHANNEL, "U0ALICE", "hello")
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel=CHANNEL, ts=human.ts, text="edited by bot")
    assert err.value.response["error"] == "cant_update_message"


async def test_ts_strictly_increasing_under_concurrency(env: Env) -> None:
    client = env.client()
    results = await asyncio.gather(*(client.chat_postMessage(channel=CHANNEL, text=str(i)) for i in range(20)))
    stamps = [r["ts"] for r in results]
    assert len(set(stamps)) == 20
    assert [m.ts for m in env.state.messages(CHANNEL)] == sorted(stamps, key=float)


async def test_ephemeral_needs_user_and_cannot_be_updated(env: Env) -> None:
    client = env.client()
    sent = await client.chat_postEphemeral(channel=CHANNEL, user="U0ALICE", text="only you")
    [eph] = env.state.ephemerals(user="U0ALICE")
    assert eph.ts == sent["message_ts"] and eph.text == "only you" and eph.channel == CHANNEL
    assert env.state.ephemerals(user="U0BOB") == []

    with pytest.raises(SlackApiError) as err:
        await client.api_call("chat.postEphemeral", json={"channel": CHANNEL, "text": "who?"})
    assert err.value.response["error"] == "invalid_arguments"
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel=CHANNEL, ts=sent["message_ts"], text="edit")
    assert err.value.response["error"] == "message_not_found"


async def test_views_open_update_and_trigger_rules(env: Env) -> None:
    client = env.client()
    modal = {
        "type": "modal",
        "callback_id": "unlock_modal",
        "title": {"type": "plain_text", "text": "Unlock nodes"},
        "submit": {"type": "plain_text", "text": "Request"},
        "blocks": [
            {
                "type": "input",
                "block_id": "pool",
                "label": {"type": "plain_text", "text": "Pool"},
                "element": {"type": "plain_text_input", "action_id": "pool_input"},
            }
        ],
    }
    trigger = env.state.trigger_id("U0ALICE")
    opened = await client.views_open(trigger_id=trigger, view=modal)
    view = opened["view"]
    assert view["id"].startswith("V") and view["hash"] and view["callback_id"] == "unlock_modal"
    assert view["state"] == {"values": {}} and view["root_view_id"] == view["id"]
    [record] = env.state.views(user="U0ALICE")
    assert record.trigger_id == trigger and not record.closed

    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id=trigger, view=modal)
    assert err.value.response["error"] == "exchanged_trigger_id"
    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id=mint_trigger_id("U0ALICE", time.time() - 10), view=modal)
    assert err.value.response["error"] == "expired_trigger_id"
    with pytest.raises(SlackApiError) as err:
        await client.api_call("views.open", json={"view": modal})
    assert err.value.response["error"] == "invalid_arguments"

    modal["title"] = {"type": "plain_text", "text": "Unlock nodes (2)"}
    updated = await client.views_update(view_id=view["id"], hash=view["hash"], view=modal)
    assert updated["view"]["title"]["text"] == "Unlock nodes (2)" and updated["view"]["id"] == view["id"]
    with pytest.raises(SlackApiError) as err:
        await client.views_update(view_id=view["id"], hash=view["hash"], view=modal)  # stale hash
    assert err.value.response["error"] == "hash_conflict"
    with pytest.raises(SlackApiError) as err:
        await client.views_update(view_id="V0NOPE", view=modal)
    assert err.value.response["error"] == "not_found"


async def test_modal_with_101_blocks_is_rejected(env: Env) -> None:
    divider = {"type": "divider"}
    modal = {"type": "modal", "title": {"type": "plain_text", "text": "Big"}, "blocks": [divider] * 101}
    with pytest.raises(SlackApiError) as err:
        await env.client().views_open(trigger_id=env.state.trigger_id("U0ALICE"), view=modal)
    assert err.value.response["error"] == "invalid_arguments"


async def test_usergroups_users_list(env: Env) -> None:
    client = env.client()
    members = await client.usergroups_users_list(usergroup="S0ONCALL")
    assert members["users"] == ["U0ALICE", "U0BOB"]
    with pytest.raises(SlackApiError) as err:
        await client.usergroups_users_list(usergroup="S0UNKNOWN")
    assert err.value.response["error"] == "no_such_subteam"
    assert env.state.calls("usergroups.users.list")[0].params == {"usergroup": "S0ONCALL"}


async def test_auth(env: Env) -> None:
    me = await env.client().auth_test()
    assert me["user_id"] and me["team_id"] == "T0SANDBOX"
    with pytest.raises(SlackApiError) as err:
        await env.client("xoxb-wrong").chat_postMessage(channel=CHANNEL, text="hi")
    assert err.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as err:
        await env.client(None).chat_postMessage(channel=CHANNEL, text="hi")
    assert err.value.response["error"] == "not_authed"
    assert env.state.messages(CHANNEL) == []


async def test_invalid_blocks_51(env: Env) -> None:
    client = env.client()
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"line {i}"}} for i in range(51)]
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel=CHANNEL, text="many", blocks=blocks)
    assert err.value.response["error"] == "invalid_blocks"
    assert "must be less than 51 items" in err.value.response["response_metadata"]["messages"][0]
    assert env.state.messages(CHANNEL) == []
    ok = await client.chat_postMessage(channel=CHANNEL, text="fifty", blocks=blocks[:50])
    assert ok["ok"]


async def test_message_text_too_long_and_no_text(env: Env) -> None:
    client = env.client()
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel=CHANNEL, text="x" * 40_001)
    assert err.value.response["error"] == "msg_too_long"
    with pytest.raises(SlackApiError) as err:
        await client.api_call("chat.postMessage", json={"channel": CHANNEL})
    assert err.value.response["error"] == "no_text"


async def test_form_encoded_blocks_as_json_string(env: Env) -> None:
    client = env.client()
    import json

    res = await client.api_call(
        "chat.postMessage", data={"channel": CHANNEL, "text": "form", "blocks": json.dumps(approval_blocks())}
    )
    assert res["ok"]
    assert env.state.messages(CHANNEL)[0].blocks == approval_blocks()
    with pytest.raises(SlackApiError) as err:
        await client.api_call("chat.postMessage", data={"channel": CHANNEL, "blocks": "[{not json"})
    assert err.value.response["error"] == "invalid_blocks_format"


async def test_rate_limited_then_retried_by_slack_sdk(env: Env) -> None:
    env.state.rate_limit("chat.postMessage", times=1)
    with pytest.raises(SlackApiError) as err:
        await env.client().chat_postMessage(channel=CHANNEL, text="no retry handler")
    assert err.value.response.status_code == 429
    assert err.value.response["error"] == "ratelimited"
    assert err.value.response.headers["retry-after"] == "0"

    env.state.rate_limit("chat.postMessage", times=1)
    res = await env.client(retry=True).chat_postMessage(channel=CHANNEL, text="retried")
    assert res["ok"]
    statuses = [c.status for c in env.state.calls("chat.postMessage")]
    assert statuses == [429, 429, 200]
    assert [m.text for m in env.state.messages(CHANNEL)] == ["retried"]


async def test_fail_next_injects_an_error(env: Env) -> None:
    env.state.fail_next("chat.update", "internal_error", status=500)
    with pytest.raises(SlackApiError) as err:
        await env.client().chat_update(channel=CHANNEL, ts="1.000001", text="x")
    assert err.value.response.status_code == 500


async def test_channels_configured_and_default(env: Env) -> None:
    with pytest.raises(SlackApiError) as err:
        await env.client().chat_postMessage(channel="general", text="hi")
    assert err.value.response["error"] == "channel_not_found"
    for channel in ("C0ANY", "G0PRIVATE", "D0DM"):
        assert (await env.client().chat_postMessage(channel=channel, text="hi"))["ok"]

    strict = SlackStandIn(channels={"C0INCIDENTS": "incidents"})
    with serve_in_thread(create_app(strict)) as server:
        client = AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=server.url + "/api/")
        assert (await client.chat_postMessage(channel="#incidents", text="by name"))["channel"] == CHANNEL
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel="C0OTHER", text="hi")
        assert err.value.response["error"] == "channel_not_found"


async def test_unknown_method(env: Env) -> None:
    with pytest.raises(SlackApiError) as err:
        await env.client().api_call("chat.doesNotExist", json={})
    assert err.value.response["error"] == "unknown_method"


async def test_response_url_five_uses(env: Env) -> None:
    client = env.client()
    posted = await client.chat_postMessage(channel=CHANNEL, text="req", blocks=approval_blocks())
    url = env.state.response_url(env.url, CHANNEL, "U0BOB", message_ts=posted["ts"])
    async with httpx.AsyncClient() as http:
        first = await http.post(url, json={"replace_original": True, "text": "Approved by <@U0BOB>"})
        assert first.status_code == 200 and first.json() == {"ok": True}
        for i in range(4):
            res = await http.post(url, json={"text": f"note {i}"})
            assert res.status_code == 200
        sixth = await http.post(url, json={"text": "one too many"})
        assert sixth.status_code == 404 and sixth.json()["error"] == "used_url"
        bogus = await http.post(env.url + "/response/not-a-token", json={"text": "x"})
        assert bogus.status_code == 404

    msg = env.state.message(CHANNEL, posted["ts"])
    assert msg is not None and msg.text == "Approved by <@U0BOB>" and msg.blocks == []
    assert msg.edits[0].replaced_by == "response_url"
    assert [e.text for e in env.state.ephemerals(user="U0BOB")] == [f"note {i}" for i in range(4)]
    effects = [r.effect for r in env.state.responses()]
    assert effects[:6] == ["replaced", *["posted_ephemeral"] * 4, "rejected:used_url"]


async def test_response_url_in_channel_and_delete(env: Env) -> None:
    client = env.client()
    posted = await client.chat_postMessage(channel=CHANNEL, text="req")
    url = env.state.response_url(env.url, CHANNEL, "U0BOB", message_ts=posted["ts"])
    async with httpx.AsyncClient() as http:
        await http.post(url, json={"response_type": "in_channel", "text": "for everyone"})
        await http.post(url, json={"delete_original": True})
    assert [m.text for m in env.state.messages(CHANNEL)] == ["for everyone"]


async def test_admin_endpoints(env: Env) -> None:
    await env.client().chat_postMessage(channel=CHANNEL, text="hello")
    async with httpx.AsyncClient(base_url=env.url) as http:
        assert (await http.get("/_standin/healthz")).json() == {"ok": True}
        calls = (await http.get("/_standin/calls", params={"method": "chat.postMessage"})).json()["calls"]
        assert calls[0]["params"]["text"] == "hello" and "token" not in calls[0]["params"]
        msgs = (await http.get("/_standin/messages", params={"channel": CHANNEL})).json()["messages"]
        assert msgs[0]["text"] == "hello" and msgs[0]["slack"]["type"] == "message"
        assert (await http.post("/_standin/reset")).json() == {"ok": True}
        assert (await http.get("/_standin/messages", params={"channel": CHANNEL})).json()["messages"] == []
    assert env.state.calls() == [] and env.state.usergroups["S0ONCALL"], "reset keeps configuration"


async def test_wait_for_sync_and_async(env: Env) -> None:
    client = env.client()

    async def later() -> None:
        await asyncio.sleep(0.05)
        await client.chat_postMessage(channel=CHANNEL, text="late")

    task = asyncio.create_task(later())
    msgs = await env.state.wait_for_async(lambda: env.state.messages(CHANNEL), timeout=5)
    await task
    assert msgs[0].text == "late"

    timer = threading.Timer(0.05, lambda: env.state.add_user_message(CHANNEL, "U0ALICE", "from a thread"))
    timer.start()
    found = await asyncio.to_thread(
        env.state.wait_for,
        lambda: env.state.count("chat.postMessage") and len(env.state.messages(CHANNEL)) == 2,
        5,
    )
    assert found
    with pytest.raises(TimeoutError):
        env.state.wait_for(lambda: env.state.count("chat.delete"), timeout=0.05)
    with pytest.raises(TimeoutError):
        await env.state.wait_for_async(lambda: False, timeout=0.05)


def test_acks_are_shown_like_slack_shows_them() -> None:
    state = SlackStandIn()
    slow = state.record_ack(
        "command",
        user="U0ALICE",
        channel=CHANNEL,
        status=200,
        body={"text": "late"},
        elapsed=3.5,
        command="/unlock-nodes",
    )
    assert slow.effect == "operation_timeout"
    [notice] = state.ephemerals(user="U0ALICE")
    assert notice.text == '/unlock-nodes failed with the error "operation_timeout"' and notice.via == "slack"

    public = state.record_ack(
        "command",
        user="U0ALICE",
        channel=CHANNEL,
        status=200,
        body={"response_type": "in_channel", "text": "for all"},
        elapsed=0.1,
    )
    assert public.effect == "posted_in_channel" and state.messages(CHANNEL)[0].text == "for all"

    modal = {"type": "modal", "title": {"type": "plain_text", "text": "M"}, "blocks": []}
    opened = state.call(
        "views.open",
        {"trigger_id": state.trigger_id("U0ALICE"), "view": modal},
        authorization=f"Bearer {DEFAULT_BOT_TOKEN}",
    ).body["view"]
    errors = {"response_action": "errors", "errors": {"pool": "unknown pool"}}
    ack = state.record_ack(
        "view_submission",
        user="U0ALICE",
        channel=None,
        status=200,
        body=errors,
        elapsed=0.1,
        view_id=opened["id"],
    )
    view = state.view(opened["id"])
    assert ack.effect == "errors" and view is not None and view.errors == {"pool": "unknown pool"}
    assert not view.closed
    state.record_ack(
        "view_submission",
        user="U0ALICE",
        channel=None,
        status=200,
        body=None,
        elapsed=0.1,
        view_id=opened["id"],
    )
    view = state.view(opened["id"])
    assert view is not None and view.closed


def test_response_url_expires_after_30_minutes() -> None:
    now = [1_733_300_000.0]
    state = SlackStandIn(clock=lambda: now[0])
    url = state.response_url("http://x", CHANNEL, "U0ALICE")
    token = url.rsplit("/", 1)[1]
    assert state.post_response(token, {"text": "in time"}).status == 200
    now[0] += 30 * 60 + 1
    late = state.post_response(token, {"text": "too late"})
    assert late.status == 404 and late.body["error"] == "expired_url"
    stamps = [
        state.call(
            "chat.postMessage", {"channel": CHANNEL, "text": "t"}, authorization=f"Bearer {DEFAULT_BOT_TOKEN}"
        ).body["ts"]
        for _ in range(3)
    ]
    assert stamps == ["1733301801.000000", "1733301801.000001", "1733301801.000002"], "frozen clock: still unique"
