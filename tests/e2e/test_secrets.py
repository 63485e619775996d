"""No credential ever leaves the bot: not in its logs (at DEBUG, libraries included), not in anything it posts
to Slack, not in the audit trail, not on /metrics — whatever path a request takes.

The stack runs with distinctive values for every secret (bot token, signing secret, AK, SK, security token);
the simulator accepts exactly that AK/SK. The signatures made from them (each Slack request's
`X-Slack-Signature`, each ModelArts `Authorization` signature) are recorded as they are sent and must not
appear either.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import httpx
import pytest
import yaml

from bot.audit import audit_rows, write_rows
from bot.modelarts.sim_state import SimulatorState
from bot.modelarts.simulator import create_app as create_simulator_app
from bot.requests import RequestState
from bot.sandbox.driver import SlackDriver
from bot.sandbox.stack import LocalStack, start_local_stack
from bot.sandbox.webapi import SlackStandIn
from bot.slack import ids
from bot.store import Store
from tests.e2e.conftest import APPROVER, CHANNEL, REQUESTER, STRANGER, USERGROUPS
from tests.e2e.helpers import ephemeral_texts, make_request, top_level_messages, wait_for_state, wait_until
from tests.support.logcapture import Captured, configured_logging

BOT_TOKEN = "xoxb-4242-SECRETBOTTOKEN-q7Zk2"
SIGNING_SECRET = "signing-SECRET-8c7b6a5d4e3f2a1b"
AK = "AKSECRETAK7Q2W9EXAMPLE"
SK = "SKsecretSK+3x9v/7b5n1mEXAMPLE"  # `+` and `/` so a URL- or form-encoded leak would differ from the raw value
SECURITY_TOKEN = "SecTokenSECRET-9z8y7x6w"
SECRETS = (BOT_TOKEN, SIGNING_SECRET, AK, SK, SECURITY_TOKEN)


class RecordingDriver(SlackDriver):
    """The Slack driver, noting every signature it puts on a request."""

    signatures: list[str]

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        headers = super().sign(body, timestamp)
        self.signatures.append(headers["X-Slack-Signature"])
        return headers


class RecordHeaders:
    """ASGI middleware in front of the simulator: keeps each request's headers as the bot sent them."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append({k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]})
        await self.app(scope, receive, send)


def simulator_with_secret_credentials() -> SimulatorState:
    text = resources.files("bot.modelarts").joinpath("simulator_seed.yml").read_text(encoding="utf-8")
    seed = yaml.safe_load(text)
    seed["credentials"] = {AK: SK}
    seed["tokens"] = []
    seed["lockout_after"] = 0  # the 401 scenario signs wrongly on purpose; keep the AK usable afterwards
    return SimulatorState(seed)


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Everything logged while the stack runs, as `serve` would write it, with every library at DEBUG."""
    with configured_logging("json", "DEBUG", list(SECRETS), library_level="DEBUG") as capture:
        yield capture


@pytest.fixture
def secret_stack(
    captured: Captured, policy_path: Path, tmp_path: Path, database_url: str
) -> Iterator[tuple[LocalStack, RecordHeaders]]:
    simulator = simulator_with_secret_credentials()
    recorder = RecordHeaders(create_simulator_app(simulator))
    stack = start_local_stack(
        policy_path=policy_path,
        state_dir=tmp_path / "state",
        database_url=database_url,
        simulator=simulator,
        slack=SlackStandIn(bot_token=BOT_TOKEN, usergroups=USERGROUPS),
        simulator_app=recorder,
        signing_secret=SIGNING_SECRET,
        slack_bot_token=BOT_TOKEN,
        huaweicloud_sdk_ak=AK,
        huaweicloud_sdk_sk=SK,
        huaweicloud_sdk_security_token=SECURITY_TOKEN,
        unlock_bot_sweep_interval_seconds=0.25,
        unlock_bot_max_attempts=2,
        unlock_bot_retry_deadline_seconds=5.0,
        unlock_bot_http_timeout_seconds=5.0,
    )
    try:
        assert set(stack.settings.secret_values()) == set(SECRETS)
        yield stack, recorder
    finally:
        stack.stop()


async def approve_and_wait(
    stack: LocalStack, driver: SlackDriver, store: Store, text: str, *final: RequestState
) -> str:
    message, request_id = await make_request(stack, driver, REQUESTER, text)
    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, request_id)
    await wait_for_state(store, request_id, *final)
    return request_id


def everything_slack_saw(slack: SlackStandIn) -> str:
    """Every Web API call (parameters and answers), message, ephemeral, response_url post, view and ack."""
    records: list[Any] = [slack.calls(), slack.ephemerals(), slack.responses(), slack.views(), slack.acks()]
    records += [slack.messages(channel) for channel in slack.channels_with_messages()]
    return json.dumps(records, default=lambda o: getattr(o, "__dict__", str(o)))


def leaks(haystack: str, needles: list[str]) -> list[str]:
    """The needles found in the haystack, raw or URL/form-encoded."""
    found = []
    for needle in needles:
        forms = {needle, quote(needle, safe=""), quote_plus(needle)}
        if any(form in haystack for form in forms):
            found.append(needle)
    return found


async def test_no_secret_reaches_logs_messages_audit_or_metrics(
    secret_stack: tuple[LocalStack, RecordHeaders], captured: Captured
) -> None:
    stack, simulator_headers = secret_stack
    store = await Store.connect(stack.settings.resolved_database_url)
    driver = RecordingDriver(stack.bot_url, SIGNING_SECRET, stack.slack_server.url)
    driver.signatures = []
    bot_answers: list[str] = []
    pool = "pool-prod-a"
    nodes = stack.simulator.node_names(pool)
    # A canary through the same pipeline: proves the output checked below is the redacting handler's.
    logging.getLogger("canary").warning("token %s", BOT_TOKEN, extra={"sk": SK})
    try:
        # A good command, approved: succeeds.
        await approve_and_wait(
            stack, driver, store, f"{pool} {nodes[0]} {nodes[1]} --reason 'INC-1'", RequestState.SUCCEEDED
        )

        # A refused command.
        bot_answers.append((await driver.command(STRANGER, CHANNEL, f"{pool} {nodes[2]}")).text)
        await wait_until(lambda: ephemeral_texts(stack, STRANGER))

        # Forged and stale signatures: 401, nothing else.
        body = urlencode({"command": "/unlock-nodes", "text": f"{pool} {nodes[2]}", "user_id": REQUESTER}).encode()
        forged_ts = str(int(time.time()))
        forged = (
            "v0=" + hmac.new(b"not-the-secret", b"v0:" + forged_ts.encode() + b":" + body, hashlib.sha256).hexdigest()
        )
        driver.signatures.append(forged)
        headers = {"X-Slack-Request-Timestamp": forged_ts, "X-Slack-Signature": forged}
        response = await driver.send_raw(body, {"Content-Type": "application/x-www-form-urlencoded", **headers})
        assert response.status_code == 401
        bot_answers.append(response.text)
        stale = driver.sign(body, timestamp=int(time.time()) - 600)
        response = await driver.send_raw(body, {"Content-Type": "application/x-www-form-urlencoded", **stale})
        assert response.status_code == 401
        bot_answers.append(response.text)

        # Denied, and cancelled.
        message, denied = await make_request(stack, driver, REQUESTER, f"{pool} {nodes[2]}")
        await driver.click(APPROVER, CHANNEL, message.ts, ids.DENY_ACTION, denied)
        await wait_for_state(store, denied, RequestState.DENIED)
        message, cancelled = await make_request(stack, driver, REQUESTER, f"{pool} {nodes[2]}")
        await driver.click(REQUESTER, CHANNEL, message.ts, ids.CANCEL_ACTION, cancelled)
        await wait_for_state(store, cancelled, RequestState.CANCELLED)

        # A partial failure.
        stack.simulator.update_faults(fail_nodes={nodes[4]})
        text = f"{pool} {nodes[3]} {nodes[4]}"
        await approve_and_wait(stack, driver, store, text, RequestState.PARTIALLY_FAILED)
        stack.simulator.set_faults({})

        # ModelArts answers 401: the gateway holds another SK for our AK (the signature no longer matches).
        with stack.simulator.lock:
            stack.simulator.credentials[AK] = "SK-rotated-elsewhere"
        await approve_and_wait(stack, driver, store, f"{pool} {nodes[5]}", RequestState.FAILED)
        with stack.simulator.lock:
            stack.simulator.credentials[AK] = SK

        # A ModelArts outage: every call answers 503 (retried, then given up).
        stack.simulator.set_faults({"error_rate": 1.0, "error_statuses": [503]})
        await approve_and_wait(stack, driver, store, f"{pool} {nodes[6]}", RequestState.FAILED)
        stack.simulator.set_faults({})

        # The modal: opened by the bare command, pickers fed from ModelArts, submitted.
        before = len(top_level_messages(stack))
        bot_answers.append((await driver.command(REQUESTER, CHANNEL, "")).text)
        view = await wait_until(lambda: driver.opened_view(REQUESTER))
        bot_answers.append((await driver.options(REQUESTER, ids.POOL_ACTION, "prod", view)).text)
        choice = {"text": {"type": "plain_text", "text": pool}, "value": pool}
        values = {
            ids.POOL_BLOCK: {ids.POOL_ACTION: {"type": "external_select", "selected_option": choice}},
            ids.NODES_BLOCK: {
                ids.NODES_ACTION: {
                    "type": "multi_external_select",
                    "selected_options": [{"text": {"type": "plain_text", "text": nodes[7]}, "value": nodes[7]}],
                }
            },
            ids.REASON_BLOCK: {ids.REASON_ACTION: {"type": "plain_text_input", "value": "INC-2 from the modal"}},
        }
        bot_answers.append(
            (await driver.options(REQUESTER, ids.NODES_ACTION, "", {**view, "state": {"values": values}})).text
        )
        bot_answers.append((await driver.submit_view(REQUESTER, view, values)).text)
        await wait_until(lambda: len(top_level_messages(stack)) > before)

        # A hard outage: ModelArts stops answering at all.
        stack.simulator_server.stop()
        await approve_and_wait(stack, driver, store, f"{pool} {nodes[8]}", RequestState.FAILED)

        async with httpx.AsyncClient() as client:
            for path in ("/metrics", "/readyz", "/healthz"):
                bot_answers.append((await client.get(stack.bot_url + path)).text)
        metrics = bot_answers[-3]

        audit = json.dumps([event.__dict__ for event in await store.audit_events()], default=str)
        rows = await audit_rows(store, None, None, None)
        exported = io.StringIO()
        write_rows(rows, "json", exported)
        write_rows(rows, "csv", exported)
    finally:
        await driver.aclose()
        await store.close()

    # The checks have something to look at: each path left its mark.
    logs = captured.output
    canary = next(line for line in captured.json_lines() if line["logger"] == "canary")
    assert canary["message"] == "token [redacted]" and canary["sk"] == "[redacted]"
    events = {line.get("event") for line in captured.json_lines()}
    assert {"request_created", "request_refused", "request_denied", "request_cancelled"} <= events
    assert {"request_succeeded", "request_partially_failed", "request_failed"} <= events
    assert any(line["logger"].startswith("slack_bolt") for line in captured.json_lines())  # libraries at DEBUG
    assert "APIGW.0301" in audit and "503" in audit
    assert "unlock_bot_requests_total" in metrics
    authorizations = [h["authorization"] for h in simulator_headers.seen if "authorization" in h]
    assert authorizations and all(h.get("x-security-token") == SECURITY_TOKEN for h in simulator_headers.seen)
    aksk_signatures = [sig for a in authorizations for sig in re.findall(r"Signature=([0-9a-f]{64})", a)]
    assert len(aksk_signatures) == len(authorizations)
    assert len(driver.signatures) > 10

    # And none of it shows a secret or a signature.
    needles = [*SECRETS, *authorizations, *aksk_signatures, *driver.signatures]
    needles += [s.removeprefix("v0=") for s in driver.signatures]
    for where, haystack in {
        "logs": logs,
        "Slack": everything_slack_saw(stack.slack),
        "audit trail": audit + exported.getvalue(),
        "HTTP answers and /metrics": "\n".join(bot_answers),
    }.items():
        assert leaks(haystack, needles) == [], f"secret material in {where}"
    # Our own code never leans on the redaction filter: the bot's raw log records hold no secret either.
    assert leaks(captured.raw.text("bot."), needles) == []


async def test_every_transition_is_one_line_naming_request_people_and_modelarts(
    secret_stack: tuple[LocalStack, RecordHeaders], captured: Captured
) -> None:
    stack, _ = secret_stack
    store = await Store.connect(stack.settings.resolved_database_url)
    try:
        async with stack.driver() as driver:
            request_id = await approve_and_wait(
                stack, driver, store, "pool-prod-a os-node-created-xzz78", RequestState.SUCCEEDED
            )
        request = await store.get_request(request_id)
    finally:
        await store.close()
    assert request is not None and request.message_ts is not None
    lines = [line for line in captured.json_lines() if line.get("request_id") == request_id]
    transitions = [line for line in lines if str(line.get("event", "")).startswith("request_")]
    assert [line["event"] for line in transitions] == [
        "request_created",
        "request_approved",
        "request_executing",
        "request_succeeded",
    ]
    for line in transitions:
        assert line["channel_id"] == CHANNEL and line["requester_id"] == REQUESTER and line["pool"] == "pool-prod-a"
        assert line["logger"] == "bot.workflow" and line["level"] == "info"
    assert transitions[0]["user_id"] == REQUESTER and transitions[1]["user_id"] == APPROVER
    modelarts_ids = {c.request_id for c in stack.simulator.calls_snapshot("batch_unlock")}
    assert set(transitions[-1]["modelarts_request_ids"]) == modelarts_ids and modelarts_ids
