"""manifest.yml agrees with the code: the command, shortcut and URLs Slack is told about are what Bolt hears.

The listener checks build the real Bolt app and run fake Slack payloads through each registered listener's
matchers (the same `async_matches` Bolt itself calls when dispatching), instead of reading private
constraint attributes: every contract ID must be matched by exactly one listener, and every registered
listener must be accounted for by one of the payloads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock
from urllib.parse import urlencode

import pytest
import yaml
from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.slack import ids

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "manifest.yml"

EXPECTED_BOT_SCOPES = {"commands", "chat:write", "chat:write.public", "usergroups:read"}

# design.md's contract: names tests and operators rely on.
DESIGN_VIEW_CALLBACK = "unlock_modal"
DESIGN_BUTTON_ACTIONS = ("unlock_approve", "unlock_deny", "unlock_cancel")

# Web API methods as slack_sdk spells them (client.chat_postMessage …) → the bot scope each needs, if any.
METHOD_SCOPES: dict[str, str | None] = {
    "chat_postMessage": "chat:write",
    "chat_update": "chat:write",
    "chat_postEphemeral": "chat:write",
    "chat_delete": "chat:write",
    "usergroups_users_list": "usergroups:read",
    "usergroups_list": "usergroups:read",
    "users_info": "users:read",
    "users_list": "users:read",
    "users_lookupByEmail": "users:read.email",
    "files_upload": "files:write",
    "files_upload_v2": "files:write",
    "files_getUploadURLExternal": "files:write",
    "files_completeUploadExternal": "files:write",
    "conversations_info": "channels:read",
    "conversations_members": "channels:read",
    "reactions_add": "reactions:write",
    "views_open": None,
    "views_update": None,
    "views_push": None,
    "auth_test": None,
}
# Scopes that no Web API call of ours needs but the app does: the command, and posting uninvited.
SCOPES_WITHOUT_METHOD = {"commands", "chat:write.public"}
WEB_API_CALL = re.compile(
    r"\.((?:chat|users|usergroups|files|conversations|reactions|views|pins|bookmarks|team|auth)_\w+)\s*\("
)
API_CALL_STRING = re.compile(r"api_call\(\s*[\"']([\w.]+)[\"']")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def default_command() -> str:
    # The declared default, whatever UNLOCK_BOT_COMMAND says in the environment running the tests.
    default = Settings.model_fields["unlock_bot_command"].default
    assert isinstance(default, str)
    return default


def the_command(manifest: dict[str, Any]) -> dict[str, Any]:
    commands = manifest["features"]["slash_commands"]
    assert len(commands) == 1
    return commands[0]


def the_shortcut(manifest: dict[str, Any]) -> dict[str, Any]:
    shortcuts = manifest["features"]["shortcuts"]
    assert len(shortcuts) == 1
    return shortcuts[0]


# -- the manifest on its own ------------------------------------------------------------------------------


def test_manifest_metadata_and_bot_user(manifest: dict[str, Any]) -> None:
    assert manifest["_metadata"]["major_version"] == 1
    assert manifest["display_information"]["name"] == "unlock-bot"
    assert 0 < len(manifest["display_information"]["description"]) <= 140
    assert manifest["features"]["bot_user"] == {"display_name": "unlock-bot", "always_online": True}


def test_slash_command_is_the_settings_default(manifest: dict[str, Any]) -> None:
    command = the_command(manifest)
    assert command["command"] == default_command() == "/unlock-nodes"
    assert command["url"].endswith("/slack/events")
    assert command["should_escape"] is False
    assert command["description"]
    assert "--reason" in command["usage_hint"]
    assert "--dry-run" in command["usage_hint"]
    assert "help" in command["usage_hint"]


def test_shortcut_is_the_one_the_code_registers(manifest: dict[str, Any]) -> None:
    shortcut = the_shortcut(manifest)
    assert shortcut["callback_id"] == ids.SHORTCUT_CALLBACK
    assert shortcut["type"] == "global"
    assert shortcut["name"] == "Unlock nodes"
    assert 0 < len(shortcut["description"]) <= 150


def test_interactivity_points_at_the_events_endpoint(manifest: dict[str, Any]) -> None:
    settings = manifest["settings"]
    interactivity = settings["interactivity"]
    assert interactivity["is_enabled"] is True
    assert interactivity["request_url"].endswith("/slack/events")
    # The modal's pool and node pickers are external selects: without this URL they stay empty.
    assert interactivity["message_menu_options_url"].endswith("/slack/events")
    assert settings["socket_mode_enabled"] is False
    assert settings["org_deploy_enabled"] is False
    assert settings["token_rotation_enabled"] is False


def test_bot_scopes_are_exactly_the_expected_set(manifest: dict[str, Any]) -> None:
    scopes = manifest["oauth_config"]["scopes"]["bot"]
    assert len(scopes) == len(set(scopes)), "a scope is listed twice"
    assert set(scopes) == EXPECTED_BOT_SCOPES
    assert "user" not in manifest["oauth_config"]["scopes"], "the bot needs no user-token scopes"


def web_api_methods_used() -> dict[str, set[str]]:
    """Web API methods called anywhere in bot/ (the Slack stand-in in bot/sandbox serves them, so not it)."""
    used: dict[str, set[str]] = {}
    for path in sorted((ROOT / "bot").rglob("*.py")):
        if "sandbox" in path.relative_to(ROOT / "bot").parts:
            continue
        text = path.read_text(encoding="utf-8")
        names = set(WEB_API_CALL.findall(text))
        names |= {m.replace(".", "_") for m in API_CALL_STRING.findall(text)}
        for name in names:
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return used


def test_every_scope_the_code_needs_is_declared_and_none_is_unused(manifest: dict[str, Any]) -> None:
    used = web_api_methods_used()
    assert "chat_postMessage" in used, "the scan found none of the calls it should; has the code moved?"
    unknown = sorted(m for m in used if m not in METHOD_SCOPES)
    assert not unknown, f"add these Web API methods (and their scopes) to METHOD_SCOPES: {unknown}"
    needed = {METHOD_SCOPES[m] for m in used} - {None}
    declared = set(manifest["oauth_config"]["scopes"]["bot"])
    missing = {scope: sorted(f for m, f in used.items() if METHOD_SCOPES[m] == scope) for scope in needed - declared}
    assert not missing, f"scopes used by the code but not in manifest.yml: {missing}"
    unused = declared - needed - SCOPES_WITHOUT_METHOD
    assert not unused, f"scopes in manifest.yml that no code uses: {sorted(unused)}"


def test_ids_module_matches_design_contract() -> None:
    assert ids.MODAL_CALLBACK == DESIGN_VIEW_CALLBACK
    assert (ids.APPROVE_ACTION, ids.DENY_ACTION, ids.CANCEL_ACTION) == DESIGN_BUTTON_ACTIONS


# -- the manifest against what Bolt actually registers ------------------------------------------------------


@pytest.fixture
async def bolt_app() -> AsyncApp:
    from bot.slack.app import SlackDeps, build_app

    deps = SlackDeps(
        workflow=MagicMock(name="workflow"),
        authorizer=MagicMock(name="authorizer"),
        modelarts=MagicMock(name="modelarts"),
        store=SimpleNamespace(),
        command=default_command(),
    )
    # Port 9 (discard) on loopback: nothing here may reach Slack, and registration makes no calls.
    client = AsyncWebClient(token="xoxb-test", base_url="http://127.0.0.1:9/api/")
    return build_app(signing_secret="s", client=client, deps=deps)


USER = {"id": "U0REQUESTER", "username": "requester", "team_id": "T0TEAM"}
TEAM = {"id": "T0TEAM", "domain": "example"}


def command_request(command: str) -> AsyncBoltRequest:
    form = {
        "token": "legacy",
        "team_id": TEAM["id"],
        "team_domain": TEAM["domain"],
        "channel_id": "C0INCIDENTS",
        "channel_name": "incidents",
        "user_id": USER["id"],
        "user_name": USER["username"],
        "command": command,
        "text": "pool-a node-1",
        "api_app_id": "A0APP",
        "response_url": "https://hooks.slack.com/commands/T0TEAM/1/x",
        "trigger_id": "1.2.trigger",
    }
    return AsyncBoltRequest(
        body=urlencode(form), headers={"content-type": ["application/x-www-form-urlencoded"]}, mode="http"
    )


def interactive_request(payload: dict[str, Any]) -> AsyncBoltRequest:
    payload = {"team": TEAM, "user": USER, "api_app_id": "A0APP", "token": "legacy", **payload}
    return AsyncBoltRequest(
        body=urlencode({"payload": json.dumps(payload)}),
        headers={"content-type": ["application/x-www-form-urlencoded"]},
        mode="http",
    )


def modal_view(callback_id: str) -> dict[str, Any]:
    return {
        "id": "V0VIEW",
        "hash": "1.abc",
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": "{}",
        "state": {"values": {}},
    }


def shortcut_request(callback_id: str) -> AsyncBoltRequest:
    return interactive_request({"type": "shortcut", "callback_id": callback_id, "trigger_id": "1.2.trigger"})


def view_submission_request(callback_id: str) -> AsyncBoltRequest:
    return interactive_request({"type": "view_submission", "view": modal_view(callback_id), "trigger_id": "1.2.t"})


def block_suggestion_request(action_id: str, block_id: str) -> AsyncBoltRequest:
    return interactive_request(
        {
            "type": "block_suggestion",
            "action_id": action_id,
            "block_id": block_id,
            "value": "",
            "container": {"type": "view", "view_id": "V0VIEW"},
            "view": modal_view(ids.MODAL_CALLBACK),
        }
    )


def block_actions_request(action_id: str) -> AsyncBoltRequest:
    return interactive_request(
        {
            "type": "block_actions",
            "trigger_id": "1.2.trigger",
            "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0INCIDENTS"},
            "channel": {"id": "C0INCIDENTS", "name": "incidents"},
            "message": {"ts": "1700000000.000100", "text": "unlock request"},
            "response_url": "https://hooks.slack.com/actions/T0TEAM/1/x",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": ids.DECISION_BLOCK,
                    "value": "req-1",
                    "action_ts": "1700000001.000200",
                    "text": {"type": "plain_text", "text": "Approve"},
                }
            ],
        }
    )


async def matching_listeners(app: AsyncApp, req: AsyncBoltRequest) -> list[Any]:
    listeners = app._async_listeners  # Bolt's dispatch list; the matching itself is Bolt's public code path
    found = []
    for listener in listeners:
        if await listener.async_matches(req=req, resp=BoltResponse(status=404, body="")):
            found.append(listener)
    return found


def contract_requests(manifest: dict[str, Any]) -> dict[str, AsyncBoltRequest]:
    """One payload per thing the manifest or design.md promises the app handles."""
    command = the_command(manifest)["command"]
    shortcut = the_shortcut(manifest)["callback_id"]
    return {
        f"command {command}": command_request(command),
        f"shortcut {shortcut}": shortcut_request(shortcut),
        f"view_submission {DESIGN_VIEW_CALLBACK}": view_submission_request(DESIGN_VIEW_CALLBACK),
        # message_menu_options_url: the modal's external selects.
        f"block_suggestion {ids.POOL_ACTION}": block_suggestion_request(ids.POOL_ACTION, ids.POOL_BLOCK),
        f"block_suggestion {ids.NODES_ACTION}": block_suggestion_request(ids.NODES_ACTION, ids.NODES_BLOCK),
        **{f"block_actions {a}": block_actions_request(a) for a in DESIGN_BUTTON_ACTIONS},
        # Rendered by views.request_message on a partially failed request.
        f"block_actions {ids.RETRY_FAILED_ACTION}": block_actions_request(ids.RETRY_FAILED_ACTION),
    }


async def test_each_contract_payload_matches_exactly_one_listener(bolt_app: AsyncApp, manifest: dict[str, Any]) -> None:
    problems = []
    for name, req in contract_requests(manifest).items():
        found = await matching_listeners(bolt_app, req)
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} listeners match")
    assert not problems, problems


async def test_every_registered_listener_is_reached_by_a_contract_payload(
    bolt_app: AsyncApp, manifest: dict[str, Any]
) -> None:
    reached: set[int] = set()
    for req in contract_requests(manifest).values():
        reached |= {id(listener) for listener in await matching_listeners(bolt_app, req)}
    stray = [
        getattr(listener.ack_function, "__qualname__", repr(listener))
        for listener in bolt_app._async_listeners
        if id(listener) not in reached
    ]
    assert bolt_app._async_listeners, "build_app registered no listeners"
    assert not stray, f"listeners that nothing in manifest.yml or design.md leads to: {stray}"


@pytest.mark.parametrize(
    "make_request",
    [
        pytest.param(lambda: command_request("/unlock-something-else"), id="other command"),
        pytest.param(lambda: shortcut_request("some_other_shortcut"), id="other shortcut"),
        pytest.param(lambda: view_submission_request("some_other_modal"), id="other view"),
        pytest.param(lambda: block_suggestion_request("some_other_select", "b"), id="other options"),
        pytest.param(lambda: block_actions_request("unlock_bogus"), id="other button"),
    ],
)
async def test_payloads_outside_the_contract_match_nothing(bolt_app: AsyncApp, make_request: Any) -> None:
    # Guards the test above: matching really depends on the IDs, not only on the payload type.
    assert await matching_listeners(bolt_app, make_request()) == []
