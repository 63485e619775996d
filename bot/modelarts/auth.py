"""Huawei Cloud request authentication: AK/SK signing (`SDK-HMAC-SHA256`) and IAM tokens, as httpx auth.

The signer reproduces `huaweicloudsdkcore.signer.signer.Signer` byte for byte (the API gateway checks exactly
that), without depending on the SDK at run time. The pure helpers are shared with the simulator, which uses
`verify_aksk` to check signatures the way the gateway does, so both sides of every test run the same rules.
Nothing here puts a secret key, a security token or a full signature into a repr, a log line or an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, unquote

import httpx

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
HEADER_DATE = "X-Sdk-Date"
HEADER_PROJECT_ID = "X-Project-Id"
HEADER_SECURITY_TOKEN = "X-Security-Token"  # noqa: S105 - a header name, not a secret
HEADER_AUTH_TOKEN = "X-Auth-Token"  # noqa: S105 - a header name, not a secret
HEADER_CONTENT_SHA256 = "X-Sdk-Content-Sha256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
DEFAULT_MAX_SKEW = timedelta(minutes=15)

# Hop-by-hop headers may be rewritten or dropped by any proxy before the gateway sees them, so they are never
# signed (the official SDK never signs them either: `requests` adds them after signing).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
_AUTH_RE = re.compile(
    r"^SDK-HMAC-SHA256\s+Access=(?P<ak>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*"
    r"Signature=(?P<sig>[0-9a-fA-F]+)\s*$"
)
_DATE_RE = re.compile(r"^\d{8}T\d{6}Z$")


class SignatureInvalid(Exception):
    """A request's AK/SK signature was rejected; `reason` is safe to log (never the SK or the signature)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- pure helpers (shared by the signer and the verifier) ------------------------------------------------


def url_encode(value: str) -> str:
    """Percent-encode all but RFC 3986 unreserved characters (`quote(safe="~")`, as the SDK does)."""
    return quote(value, safe="~")


def canonical_uri(raw_path: str) -> str:
    """The signed form of a path: decoded, each segment re-encoded, always ending in `/`."""
    url_path = "/".join(url_encode(segment) for segment in unquote(raw_path).split("/"))
    return url_path if url_path.endswith("/") else url_path + "/"


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decode a raw query string into pairs, keeping blank values (`a&b=` → `[("a", ""), ("b", "")]`)."""
    return parse_qsl(raw_query, keep_blank_values=True)


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Sorted, encoded `k=v` pairs joined with `&`; this is both what is signed and what is sent."""
    return "&".join(f"{url_encode(key)}={url_encode(value)}" for key, value in sorted(pairs))


def signed_header_names(names: Iterable[str]) -> list[str]:
    """Headers the SDK signs: every name without `_`, lowercased and sorted (hop-by-hop ones excluded)."""
    return sorted({name.lower() for name in names if "_" not in name and name.lower() not in _HOP_BY_HOP})


def payload_hash(body: bytes, headers: Mapping[str, str]) -> str:
    """sha256 hex of the body; an `X-Sdk-Content-Sha256` header stands in for it when there is a body."""
    if not body:
        return EMPTY_HASH
    declared = _get(headers, HEADER_CONTENT_SHA256)
    return declared if declared else hashlib.sha256(body).hexdigest()


def canonical_request(  # noqa: PLR0917 - mirrors the parts of the canonical request
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    """`METHOD\\nURI\\nQUERY\\nHEADERS\\nSIGNED_HEADERS\\nPAYLOAD_HASH`; header values are stripped."""
    lowered = {name.lower(): value.strip() for name, value in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered.get(name, '')}\n" for name in signed_headers)
    return "\n".join(
        (
            method.upper(),
            canonical_uri(raw_path),
            canonical_query(parse_query(raw_query)),
            canonical_headers,
            ";".join(signed_headers),
            payload_hash(body, headers),
        )
    )


def string_to_sign(canonical: str, sdk_date: str) -> str:
    """`SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<sha256 hex of the canonical request>`."""
    return f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def signature(sk: str, to_sign: str) -> str:
    """Hex HMAC-SHA256 of the string to sign, keyed with the secret key."""
    return hmac.new(sk.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization_header(ak: str, signed_headers: Sequence[str], sig: str) -> str:
    """The `Authorization` header value the gateway expects."""
    return f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(signed_headers)}, Signature={sig}"


def format_sdk_date(moment: datetime) -> str:
    """`YYYYMMDDTHHMMSSZ` in UTC; naive datetimes are taken to be UTC already."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(DATE_FORMAT)


def verify_aksk(  # noqa: PLR0917 - shared contract with the simulator
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    secret_for_ak: Callable[[str], str | None],
    now: datetime,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> str:
    """Check a received request's signature as the API gateway does; return its AK or raise SignatureInvalid.

    `raw_path` and `raw_query` are exactly as received (still percent-encoded); header values may be the
    latin-1 decoding an ASGI server gives (UTF-8 bytes on the wire are recovered).
    """
    received = {name.lower(): _wire_to_text(value) for name, value in headers.items()}
    authorization = received.get("authorization")
    if not authorization:
        raise SignatureInvalid("missing Authorization header")
    match = _AUTH_RE.match(authorization.strip())
    if match is None:
        raise SignatureInvalid("malformed Authorization header")
    ak = match["ak"]
    signed = match["signed"].split(";")
    if any(name != name.lower() or not name for name in signed) or signed != sorted(signed):
        raise SignatureInvalid("malformed Authorization header: SignedHeaders not lowercase and sorted")
    if "x-sdk-date" not in signed or "host" not in signed:
        raise SignatureInvalid("malformed Authorization header: host and x-sdk-date must be signed")
    sdk_date = received.get("x-sdk-date", "").strip()
    if not sdk_date:
        raise SignatureInvalid("missing X-Sdk-Date header")
    if not _DATE_RE.match(sdk_date):
        raise SignatureInvalid("malformed X-Sdk-Date header (want YYYYMMDDTHHMMSSZ)")
    try:
        signed_at = datetime.strptime(sdk_date, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureInvalid("malformed X-Sdk-Date header (want YYYYMMDDTHHMMSSZ)") from None
    reference = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    if abs(reference - signed_at) > max_skew:
        raise SignatureInvalid(f"X-Sdk-Date is more than {max_skew} away from the server clock")

    missing = [name for name in signed if name not in received]
    if missing:
        raise SignatureInvalid(f"signed header(s) missing from request: {', '.join(missing)}")

    sk = secret_for_ak(ak)
    if sk is None:
        raise SignatureInvalid("unknown access key")

    declared = received.get(HEADER_CONTENT_SHA256.lower())
    if body and declared and declared != UNSIGNED_PAYLOAD and declared != hashlib.sha256(body).hexdigest():
        raise SignatureInvalid("signature mismatch: body does not match X-Sdk-Content-Sha256")

    canonical = canonical_request(method, raw_path, raw_query, received, signed, body)
    expected = signature(sk, string_to_sign(canonical, sdk_date))
    if not hmac.compare_digest(expected, match["sig"].lower()):
        raise SignatureInvalid("signature mismatch")
    return ak


def _get(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _wire_to_text(value: str) -> str:
    """Undo an ASGI server's latin-1 decoding of UTF-8 header bytes; leave anything else as it is."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _bytes_to_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# --- httpx auth ------------------------------------------------------------------------------------------


class AkSkAuth(httpx.Auth):
    """Sign each request with AK/SK like the official SDK; rewrites the query to the canonical form it signs.

    Differences from the SDK's header handling, none affecting the signature algorithm: `X-Sdk-Date` is
    always set from `clock` and any existing `Authorization` is replaced (so a reused request is re-signed
    fresh), and hop-by-hop headers (`Connection`, ...) are not signed because proxies may alter them.
    """

    requires_request_body = True

    def __init__(
        self,
        ak: str,
        sk: str,
        project_id: str | None,
        security_token: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not ak:
            raise ValueError("AK/SK auth needs an access key (AK)")
        if not sk:
            raise ValueError("AK/SK auth needs a secret key (SK)")
        self.ak = ak
        self.project_id = project_id
        self.__sk = sk
        self.__security_token = security_token or None
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        token = ", security_token=***" if self.__security_token else ""
        return f"AkSkAuth(ak={self.ak!r}, sk=***, project_id={self.project_id!r}{token})"

    __str__ = __repr__

    def sign(self, request: httpx.Request) -> None:
        """Add the auth headers, rewrite the query and set `Authorization` on `request` in place."""
        headers = request.headers
        headers.pop("Authorization", None)
        if self.project_id:
            headers[HEADER_PROJECT_ID] = self.project_id
        if self.__security_token:
            headers[HEADER_SECURITY_TOKEN] = self.__security_token
        content_type = headers.get("Content-Type")
        if content_type and not content_type.startswith(("application/json", "application/bson")):
            headers[HEADER_CONTENT_SHA256] = UNSIGNED_PAYLOAD
        sdk_date = format_sdk_date(self._clock())
        headers[HEADER_DATE] = sdk_date
        if "Host" not in headers:
            headers["Host"] = request.url.netloc.decode("ascii")

        # One text value per header name (repeated headers joined as httpx does), stripped like the SDK, and
        # written back so that what is sent is exactly what is signed.
        values: dict[str, list[str]] = {}
        for raw_name, raw_value in headers.raw:
            values.setdefault(raw_name.decode("latin-1").lower(), []).append(_bytes_to_text(raw_value))
        text = {name: ", ".join(parts).strip() for name, parts in values.items()}
        signed = signed_header_names(text)
        rebuilt: list[tuple[bytes, bytes]] = []
        written: set[str] = set()
        for raw_name, raw_value in headers.raw:
            name = raw_name.decode("latin-1").lower()
            if name not in signed:
                rebuilt.append((raw_name, raw_value))
            elif name not in written:
                written.add(name)
                rebuilt.append((raw_name, text[name].encode("utf-8")))
        request.headers = headers = httpx.Headers(rebuilt)

        raw_path, _, raw_query = request.url.raw_path.decode("ascii").partition("?")
        query = canonical_query(parse_query(raw_query))
        request.url = request.url.copy_with(query=query.encode("ascii") if query else None)

        canonical = canonical_request(request.method, raw_path, query, text, signed, request.content)
        sig = signature(self.__sk, string_to_sign(canonical, sdk_date))
        headers["Authorization"] = authorization_header(self.ak, signed, sig)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request)
        yield request


class TokenAuth(httpx.Auth):
    """IAM token auth: `X-Auth-Token` (and `X-Project-Id` when known) on every request."""

    def __init__(self, token: str, project_id: str | None) -> None:
        if not token:
            raise ValueError("token auth needs an IAM token")
        self.project_id = project_id
        self.__token = token

    def __repr__(self) -> str:
        return f"TokenAuth(token=***, project_id={self.project_id!r})"

    __str__ = __repr__

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[HEADER_AUTH_TOKEN] = self.__token
        if self.project_id:
            request.headers[HEADER_PROJECT_ID] = self.project_id
        yield request
