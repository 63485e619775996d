"""Structured logging: JSON lines for `serve`, readable lines for the demo, secrets scrubbed from both.

Code logs with `extra={"event": ..., "request_id": ...}`; those fields become JSON keys. As a last line of
defence, every configured secret value is replaced by `[redacted]` wherever it appears in a record.

Libraries stay at INFO or WARNING even when the bot logs at DEBUG: slack_sdk's debug lines carry whole
request and response bodies and httpx/httpcore/aiosqlite narrate every byte, which is noise in production
and a needless exposure. `library_level` lowers them on purpose (the secrets test does).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

# Attributes every LogRecord has; anything else on a record came from `extra=` and is ours to show.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
REDACTED = "[redacted]"

# The least severe level each library may log at, whatever the bot's own level.
LIBRARY_LEVELS = {
    "slack_bolt": logging.INFO,
    "slack_sdk": logging.INFO,
    # slack_sdk tests this logger's *own* level before building its debug lines: set it, not only the parent.
    "slack_sdk.web.async_base_client": logging.INFO,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "aiohttp": logging.WARNING,
    "aiosqlite": logging.WARNING,
    "asyncpg": logging.WARNING,
    "sqlalchemy": logging.WARNING,
    "alembic": logging.WARNING,
    "asyncio": logging.WARNING,
    "uvicorn.access": logging.WARNING,
}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`HH:MM:SS level logger: message key=value …` for people watching a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={v}" for k, v in extra_fields(record).items())
        line = f"{when} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line


# Credential material that is not a configured value but is derived from one, or is one we were never told
# about: request signatures (Bolt logs a rejected request's `X-Slack-Signature` and body at INFO), Slack
# tokens of any kind, bearer credentials.
PATTERNS = (
    (re.compile(r"\bv0=[0-9a-fA-F]{64}\b"), "v0=" + REDACTED),  # Slack request signatures
    (re.compile(r"(?i)\b(signature=)[0-9a-f]{64}\b"), r"\g<1>" + REDACTED),  # SDK-HMAC-SHA256 (AK/SK)
    (re.compile(r"\bx(?:ox[abposre]|app)-[0-9A-Za-z-]+"), REDACTED),  # Slack tokens
    (re.compile(r"(?i)\b(bearer\s+)[^\s'\",}]+"), r"\g<1>" + REDACTED),
    # A response_url lets whoever holds it post in the channel for 30 minutes; raw or form-encoded.
    (re.compile(r"(?i)(hooks\.slack\.com(?:/|%2F))[^\s'\"&]+"), r"\g<1>" + REDACTED),
)


class RedactSecrets(logging.Filter):
    """Replace any configured secret value (and anything shaped like a credential) that reaches a record."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        values = {s for s in secrets if s and len(s) >= 4}
        # The same value as it appears in a URL or a form body, e.g. a secret with `/` or `+` in it.
        values |= {quote(s, safe="") for s in values} | {quote_plus(s) for s in values}
        self.secrets = sorted(values, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            for pattern, replacement in PATTERNS:
                value = pattern.sub(replacement, value)
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed format/args pair: show the raw parts rather than lose the line
            message = f"{record.msg} {record.args}"
        record.msg = self.scrub(message)
        record.args = None
        for key, value in extra_fields(record).items():
            setattr(record, key, self.scrub(value))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


def configure_logging(
    fmt: str = "json",
    level: str = "INFO",
    secrets: Iterable[str] = (),
    *,
    stream: TextIO | None = None,
    library_level: str | None = None,
) -> logging.Handler:
    """Route every logger (ours, Bolt's, uvicorn's) through one redacting handler on `stream` (stderr).

    Libraries log at `library_level` when given, else at the bot's level but never below `LIBRARY_LEVELS`.
    Returns the handler, so a caller (a test) can remove it again.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    bot_level = root.level
    for name, floor in LIBRARY_LEVELS.items():
        chosen = logging.getLevelName(library_level.upper()) if library_level else max(floor, bot_level)
        logging.getLogger(name).setLevel(chosen)
    return handler
