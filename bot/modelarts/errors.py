"""The ModelArts error hierarchy, and turning an HTTP error response into one of its classes.

Callers decide what to do (retry, stop, tell the user) by class, so every failure mode the client can meet has
its own class; `str()` is the sentence a person reads, always with the error code and ModelArts' request ID
because that is what Huawei support asks for. Nothing here ever holds a credential.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

POOL_NOT_FOUND_CODE = "ModelArts.50015001"

# Keys the official SDK accepts for the error body, in the order it tries them.
_CODE_KEYS = ("error_code", "errorCode", "code")
_MSG_KEYS = ("error_msg", "errorMsg", "message")


class ModelArtsError(Exception):
    """Any failure talking to ModelArts. `status` is None when no HTTP response was received."""

    summary = "ModelArts call failed"

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        error_code: str | None = None,
        error_msg: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = self.message or self.error_msg or self.summary
        details = [d for d in (self.error_code, None if self.status is None else f"HTTP {self.status}") if d]
        if self.request_id:
            details.append(f"request ID {self.request_id}")
        return f"{text} ({', '.join(details)})" if details else text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, error_code={self.error_code!r}, "
            f"error_msg={self.error_msg!r}, request_id={self.request_id!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes would be lost by the default Exception pickling.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[ModelArtsError], state: dict[str, Any]) -> ModelArtsError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, str(err))
    return err


class BadRequest(ModelArtsError):
    """400 or any other 4xx not classified more precisely: the request itself is wrong; never retried."""

    summary = "ModelArts rejected the request"


class NotFound(BadRequest):
    """404: the API route or the node does not exist."""

    summary = "not found"


class PoolNotFound(NotFound):
    """404 `ModelArts.50015001`: the pool does not exist in this project."""

    summary = "pool not found"


class AuthenticationFailed(ModelArtsError):
    """401: bad or expired credentials or signature. Never retried: 5 bad signatures in a row lock the AK."""

    summary = "ModelArts rejected the credentials"


class PermissionDenied(ModelArtsError):
    """403: the credentials are valid but not allowed to do this."""

    summary = "not authorized"


class Throttled(ModelArtsError):
    """429: too many requests; `retry_after` (seconds) is the server's hint, when it gave one."""

    summary = "throttled by ModelArts"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ServerError(ModelArtsError):
    """5xx: the server failed; a change may or may not have been applied (except 503)."""

    summary = "ModelArts server error"


class ServiceUnavailable(ServerError):
    """503: the service refused the request before doing anything; `retry_after` as for `Throttled`."""

    summary = "ModelArts is unavailable"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class BadResponse(ModelArtsError):
    """A 2xx whose body is not what the API documents (not JSON, wrong shape, wrong node names)."""

    summary = "ModelArts sent an unexpected response"


class OutcomeUnknown(ModelArtsError):
    """The request may have reached ModelArts but no answer came back (timeout, dropped connection)."""

    summary = "no answer from ModelArts; the outcome is unknown"


class ConnectionFailed(ModelArtsError):
    """Could not connect: nothing was sent, so retrying is safe."""

    summary = "could not connect to ModelArts"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _first_str(body: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = body.get(key)
        if value is not None and value != "":
            return str(value)
    return None


def parse_error_body(content: bytes) -> tuple[str | None, str | None]:
    """(error_code, error_msg) from an error body in any shape the SDK accepts; Nones if unreadable."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]  # some gateways nest it: {"error": {"code": …, "message": …}}
    if not isinstance(body, dict):
        return None, None
    return _first_str(body, _CODE_KEYS), _first_str(body, _MSG_KEYS)


def error_from_response(status: int, content: bytes, headers: Mapping[str, str]) -> ModelArtsError:
    """The typed error for a non-2xx response. `headers` must be case-insensitive (e.g. httpx.Headers)."""
    code, msg = parse_error_body(content)
    request_id = headers.get("x-request-id") or None
    fields: dict[str, Any] = {
        "status": status,
        "error_code": code,
        "error_msg": msg,
        "request_id": request_id,
    }
    if status == 401:
        return AuthenticationFailed(**fields)
    if status == 403:
        return PermissionDenied(**fields)
    if status == 404:
        if code == POOL_NOT_FOUND_CODE or (code is None and msg is not None and "pool" in msg.lower()):
            return PoolNotFound(**fields)
        return NotFound(**fields)
    if status == 429:
        return Throttled(retry_after=parse_retry_after(headers.get("retry-after")), **fields)
    if status == 503:
        return ServiceUnavailable(retry_after=parse_retry_after(headers.get("retry-after")), **fields)
    if status >= 500:
        return ServerError(**fields)
    if 400 <= status < 500:
        return BadRequest(**fields)
    return BadResponse(f"unexpected HTTP status {status}", **fields)
