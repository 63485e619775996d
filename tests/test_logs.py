"""Structured logs: JSON lines by default, secrets scrubbed from every part of a record, libraries kept quiet."""

from __future__ import annotations

import json
import logging
import sys
from urllib.parse import quote, quote_plus

import httpx
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.logs import REDACTED, JsonFormatter, RedactSecrets, TextFormatter
from bot.sandbox.webapi import SlackStandIn
from bot.sandbox.webapi import create_app as create_standin_app
from bot.serving import serve_in_thread
from tests.support.logcapture import configured_logging

TOKEN = "xoxb-1111-2222-LOGTESTTOKEN"
SECRET = "s3cr3t/with+odd=chars"


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("bot.test", logging.INFO, __file__, 1, msg, args or None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_json_line_carries_extra_fields() -> None:
    line = JsonFormatter().format(record("request %s approved", "R1", event="request_approved", user_id="U1"))
    entry = json.loads(line)
    assert entry["message"] == "request R1 approved"
    assert entry["level"] == "info" and entry["logger"] == "bot.test"
    assert entry["event"] == "request_approved" and entry["user_id"] == "U1"
    assert entry["time"].endswith("+00:00")


def test_text_line_is_readable() -> None:
    line = TextFormatter().format(record("request created", event="request_created"))
    assert "info" in line and "bot.test: request created" in line and "event=request_created" in line


def test_redaction_covers_message_args_extras_and_exceptions() -> None:
    scrub = RedactSecrets([TOKEN, SECRET, "abc"])  # too short to scrub safely: ignored
    try:
        raise RuntimeError(f"auth failed for {TOKEN}")
    except RuntimeError:
        exc_info = sys.exc_info()
    rec = record(
        "sending %s",
        f"Bearer {TOKEN}",
        headers={"Authorization": f"Bearer {TOKEN}", "nested": [SECRET, ("x", TOKEN)]},
        url="https://example.test/?secret=s3cr3t%2Fwith%2Bodd%3Dchars",
        form="secret=s3cr3t%2Fwith%2Bodd%3Dchars",
    )
    rec.exc_info = exc_info
    assert scrub.filter(rec) is True
    text = JsonFormatter().format(rec)
    assert TOKEN not in text and SECRET not in text
    assert "s3cr3t%2Fwith%2Bodd%3Dchars" not in text  # the URL-encoded form too
    assert text.count(REDACTED) >= 6
    assert "abc" not in scrub.secrets
    entry = json.loads(text)
    assert entry["headers"]["nested"][1] == ["x", REDACTED]
    assert "RuntimeError: auth failed for [redacted]" in entry["exception"]


def test_redaction_survives_a_malformed_format() -> None:
    rec = record("%d nodes", "not a number")
    RedactSecrets([TOKEN]).filter(rec)
    assert "not a number" in rec.getMessage()


def test_configure_logging_json_by_default_and_scrubbed() -> None:
    with configured_logging(secrets=[TOKEN]) as captured:
        logging.getLogger("bot.workflow").info("token is %s", TOKEN, extra={"event": "x", "request_id": "R1"})
        logging.getLogger("bot.workflow").debug("not shown at INFO")
        [line] = captured.json_lines()
    assert line["message"] == f"token is {REDACTED}" and line["request_id"] == "R1"


@pytest.mark.parametrize(
    ("level", "expected"),
    [("DEBUG", {"httpx": logging.WARNING, "slack_sdk": logging.INFO, "bot": logging.DEBUG}), ("ERROR", {})],
)
def test_libraries_stay_quiet_when_the_bot_debugs(level: str, expected: dict[str, int]) -> None:
    with configured_logging(level=level):
        root = logging.getLogger()
        assert root.level == logging.getLevelName(level)
        for name, lvl in expected.items():
            assert logging.getLogger(name).getEffectiveLevel() == lvl, name
        if level == "ERROR":
            assert logging.getLogger("slack_sdk").level == logging.ERROR  # never below the bot's own level
    with configured_logging(level="INFO", library_level="DEBUG"):
        assert logging.getLogger("httpx").level == logging.DEBUG


def test_configure_logging_is_undone_by_the_helper() -> None:
    before = list(logging.getLogger().handlers)
    with configured_logging(level="DEBUG"):
        pass
    assert logging.getLogger().handlers == before


async def test_slack_client_debug_output_never_shows_the_token() -> None:
    """slack_sdk logs whole requests at DEBUG; at the bot's DEBUG it stays quiet, and forced on it is scrubbed."""
    standin = SlackStandIn(bot_token=TOKEN)
    with serve_in_thread(create_standin_app(standin)) as server:
        for library_level in (None, "DEBUG"):
            with configured_logging(level="DEBUG", secrets=[TOKEN], library_level=library_level) as captured:
                client = AsyncWebClient(token=TOKEN, base_url=server.url + "/api/")
                response = await client.chat_postMessage(channel="C0LOGS", text=f"hello, the token is {TOKEN}")
                assert response["ok"]
                if client.session is not None:
                    await client.session.close()
            sdk_lines = [line for line in captured.json_lines() if line["logger"].startswith("slack_sdk")]
            if library_level is None:
                assert sdk_lines == []
            else:
                assert sdk_lines, "slack_sdk should have logged the call at DEBUG"
                assert any(REDACTED in json.dumps(line) for line in sdk_lines)  # the echoed text, scrubbed
            assert TOKEN not in captured.output


async def test_httpx_debug_output_never_shows_credentials() -> None:
    """httpx/httpcore at DEBUG name requests, not their headers; a credential in a URL is scrubbed, encoded or not."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    with configured_logging(level="DEBUG", secrets=[SECRET], library_level="DEBUG") as captured:
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get("https://modelarts.test/v2/pools", params={"x": SECRET}, headers={"X-Auth-Token": SECRET})
        logging.getLogger("bot.test").info("calling %s", "https://modelarts.test/?x=" + quote(SECRET, safe=""))
    assert "modelarts.test" in captured.output
    for form in (SECRET, quote(SECRET, safe=""), quote_plus(SECRET)):
        assert form not in captured.output


def test_credential_shapes_are_scrubbed_even_when_not_configured() -> None:
    """Signatures derived from a secret, and tokens nobody told us about, never reach the output either."""
    slack_signature = "v0=" + "a1" * 32
    aksk = "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host;x-sdk-date, Signature=" + "0f" * 32
    body = "token=x&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT0%2F1%2Fabc&text=hi"
    rec = record(
        "Invalid request signature detected (signature: %s, body: %s)",
        slack_signature,
        body,
        auth=aksk,
        headers={"Authorization": "Bearer xoxp-123-456-abcdef"},
        other="an app token xapp-1-A0-123-ff and a url https://hooks.slack.com/actions/T0/1/xyz",
    )
    RedactSecrets([]).filter(rec)
    text = JsonFormatter().format(rec)
    for leaked in ("a1" * 32, "0f" * 32, "xoxp-123", "xapp-1-A0", "%2Fcommands%2FT0", "actions/T0/1/xyz"):
        assert leaked not in text, leaked
    assert "Access=AK1" in text and "text=hi" in text  # the rest of the line stays readable
