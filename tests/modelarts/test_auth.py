"""AK/SK signing and token auth: the doc's reference vector, equality with the official SDK signer, the
verifier's accept/reject rules, and a real loopback round trip proving that what is sent is what is signed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.modelarts.auth import (
    AkSkAuth,
    SignatureInvalid,
    TokenAuth,
    canonical_query,
    canonical_uri,
    verify_aksk,
)
from bot.serving import RunningServer, serve_in_thread

HOST = "modelarts.cn-north-4.myhuaweicloud.com"
AK, SK, TOKEN = "AKTEST", "SK-very-secret-value", "sts-token-very-secret"
FIXED = datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC)
KEYS = {AK: SK, "AKOTHER": "other-secret"}


def fixed_clock() -> datetime:
    return FIXED


def parts(request: httpx.Request) -> tuple[str, str, str, dict[str, str], bytes]:
    """What a server would see of a signed request: method, raw path, raw query, headers, body."""
    raw_path, _, raw_query = request.url.raw_path.decode("ascii").partition("?")
    return request.method, raw_path, raw_query, dict(request.headers.items()), request.content


# --- the reference vector from docs/modelarts-api.md ----------------------------------------------------


def test_reference_vector_from_the_docs() -> None:
    body = b'{"nodeNames": ["os-node-created-xzz78"], "actions": ["delete"]}'
    request = httpx.Request(
        "POST",
        f"https://{HOST}/v2/proj123/pools/pool-abc/nodes/batch-unlock",
        headers={"Content-Type": "application/json", "User-Agent": "huaweicloud-usdk-python/3.0"},
        content=body,
    )
    # The vector was produced with exactly these headers; httpx adds Content-Length, which the SDK does not.
    del request.headers["Content-Length"]
    AkSkAuth("AKEXAMPLE", "SKEXAMPLE", "proj123", clock=fixed_clock).sign(request)
    assert request.headers["X-Sdk-Date"] == "20250101T000000Z"
    assert request.headers["X-Project-Id"] == "proj123"
    assert request.headers["Authorization"] == (
        "SDK-HMAC-SHA256 Access=AKEXAMPLE, "
        "SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, "
        "Signature=a533fb9b0b24647266659d452427d65a4a04030fbefca8808db4c9a5427cce34"
    )


def test_canonical_uri_and_query_rules() -> None:
    assert canonical_uri("/v2/p/pools/a%20b~c/nodes") == "/v2/p/pools/a%20b~c/nodes/"
    assert canonical_uri("/v2/p/x+y/%E6%BC%A2/") == "/v2/p/x%2By/%E6%BC%A2/"
    assert canonical_query([("b", "1"), ("a", "z"), ("a", ""), ("c", "x y+~/")]) == ("a=&a=z&b=1&c=x%20y%2B~%2F")


# --- equality with the official SDK signer ---------------------------------------------------------------

_SPECIAL = st.sampled_from([" ", "%", "~", "+", "/", "?", "#", "&", "=", "é", "漢", "😀", "%2F", "%zz", ":", "@"])
_TEXT = st.lists(st.one_of(_SPECIAL, st.characters(exclude_categories=("Cs",))), max_size=6).map("".join)
_SEGMENT = st.one_of(st.sampled_from(["v2", "pools", "pool-prod-a", "nodes", "batch-unlock"]), _TEXT).filter(
    lambda s: s not in {".", ".."}
)
_KEY = st.one_of(st.sampled_from(["limit", "continue", "a", "a b"]), _TEXT)
_HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12).map(
    lambda v: f"  {v} "
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    segments=st.lists(_SEGMENT, min_size=1, max_size=5),
    trailing_slash=st.booleans(),
    query=st.lists(st.tuples(_KEY, _TEXT), max_size=6),
    body=st.one_of(st.none(), st.binary(max_size=64)),
    content_type=st.sampled_from(
        [None, "application/json", "application/json;charset=UTF-8", "text/plain", "application/octet-stream"]
    ),
    token=st.one_of(st.none(), st.text(alphabet="ABCdef0123456789+/=", min_size=1, max_size=40)),
    project_id=st.sampled_from([None, "0b5f3c9e8d7a4e1f", "proj123"]),
    extra=st.one_of(st.none(), _HEADER_VALUE),
    host=st.sampled_from([HOST, "modelarts.ap-southeast-1.myhuaweicloud.cn:8443"]),
)
def test_signature_equals_official_sdk(
    method: str,
    segments: list[str],
    trailing_slash: bool,
    query: list[tuple[str, str]],
    body: bytes | None,
    content_type: str | None,
    token: str | None,
    project_id: str | None,
    extra: str | None,
    host: str,
) -> None:
    # Path parameters are encoded the way the SDK's client does it: quote(value, safe="").
    resource_path = "/" + "/".join(quote(s, safe="") for s in segments) + ("/" if trailing_slash else "")
    headers = {"User-Agent": "huaweicloud-usdk-python/3.0"}
    if content_type:
        headers["Content-Type"] = content_type
    if extra is not None:
        headers["X-Custom-Header"] = extra
        headers["X_Not_Signed"] = extra.strip()
    request = httpx.Request(method, f"https://{host}{resource_path}", params=query, headers=headers, content=body)
    assert request.url.raw_path.decode().partition("?")[0] == resource_path

    # The SDK request, as its http client builds it: same headers (Host is added by the signer itself).
    # Keep the names' case: the SDK looks up exactly "Content-Type", as its client spells it.
    sdk_headers = {k.decode(): v.decode() for k, v in request.headers.raw if k.lower() != b"host"}
    sdk_headers["X-Sdk-Date"] = "20250101T000000Z"
    sdk_request = SdkRequest(
        method=method,
        schema="https",
        host=host,
        resource_path=resource_path,
        query_params=list(query),
        header_params=sdk_headers,
        body=body,
    )
    credentials = BasicCredentials(AK, SK, project_id)
    if token is not None:
        credentials = credentials.with_security_token(token)
    credentials.sign_request(sdk_request)

    auth = AkSkAuth(AK, SK, project_id, security_token=token, clock=fixed_clock)
    auth.sign(request)

    assert request.headers["Authorization"] == sdk_request.header_params["Authorization"]
    assert request.url.raw_path.decode("ascii") == sdk_request.uri  # same path and canonical query sent
    # And our verifier accepts what we signed.
    method_, raw_path, raw_query, sent, content = parts(request)
    assert verify_aksk(method_, raw_path, raw_query, sent, content, KEYS.get, FIXED) == AK


# --- the verifier's rules --------------------------------------------------------------------------------


@pytest.fixture
def signed() -> httpx.Request:
    request = httpx.Request(
        "POST",
        f"https://{HOST}/v2/proj123/pools/pool-abc/nodes/batch-unlock",
        params={"b": "2", "a": "x y"},
        json={"nodeNames": ["n1"], "actions": ["delete"]},
    )
    AkSkAuth(AK, SK, "proj123", security_token=TOKEN, clock=fixed_clock).sign(request)
    return request


def rejected(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    now: datetime = FIXED,
) -> str:
    with pytest.raises(SignatureInvalid) as caught:
        verify_aksk(method, raw_path, raw_query, headers, body, KEYS.get, now)
    reason = caught.value.reason
    assert str(caught.value) == reason
    assert SK not in reason and "other-secret" not in reason and TOKEN not in reason
    signature_hex = headers.get("authorization", "").rpartition("=")[2]
    assert not signature_hex or signature_hex not in reason
    return reason


def test_verify_accepts_signed_request(signed: httpx.Request) -> None:
    method, path, query, headers, body = parts(signed)
    assert query == "a=x%20y&b=2"
    assert headers["x-security-token"] == TOKEN
    assert "x-security-token" in headers["authorization"]
    assert verify_aksk(method, path, query, headers, body, KEYS.get, FIXED) == AK
    assert verify_aksk(method, path, query, headers, body, KEYS.get, FIXED + timedelta(minutes=15)) == AK


def test_verify_rejects_tampering(signed: httpx.Request) -> None:
    method, path, query, headers, body = parts(signed)
    assert rejected(method, path, query, headers, body.replace(b"n1", b"n2")) == "signature mismatch"
    assert rejected(method, path.replace("pool-abc", "pool-xyz"), query, headers, body) == "signature mismatch"
    assert rejected(method, path, query + "&c=3", headers, body) == "signature mismatch"
    assert rejected("PUT", path, query, headers, body) == "signature mismatch"
    assert rejected(method, path, query, {**headers, "x-project-id": "other"}, body) == "signature mismatch"


def test_verify_rejects_wrong_sk_and_unknown_ak(signed: httpx.Request) -> None:
    method, path, query, headers, body = parts(signed)
    other = {**headers, "authorization": headers["authorization"].replace(f"Access={AK}", "Access=AKOTHER")}
    assert rejected(method, path, query, other, body) == "signature mismatch"
    unknown = {**headers, "authorization": headers["authorization"].replace(f"Access={AK}", "Access=NOPE")}
    assert rejected(method, path, query, unknown, body) == "unknown access key"


def test_verify_rejects_bad_dates(signed: httpx.Request) -> None:
    method, path, query, headers, body = parts(signed)
    for skew in (timedelta(minutes=16), -timedelta(minutes=16)):
        assert "X-Sdk-Date" in rejected(method, path, query, headers, body, now=FIXED + skew)
    malformed = {**headers, "x-sdk-date": "2025-01-01T00:00:00Z"}
    assert "malformed X-Sdk-Date" in rejected(method, path, query, malformed, body)
    no_date = {k: v for k, v in headers.items() if k != "x-sdk-date"}
    assert "missing X-Sdk-Date" in rejected(method, path, query, no_date, body)


def test_verify_rejects_missing_or_malformed_authorization(signed: httpx.Request) -> None:
    method, path, query, headers, body = parts(signed)
    bare = {k: v for k, v in headers.items() if k != "authorization"}
    assert rejected(method, path, query, bare, body) == "missing Authorization header"
    for bad in ("Bearer abc", "SDK-HMAC-SHA256 Access=AKTEST, Signature=00", "SDK-HMAC-SHA256 garbage"):
        assert "malformed Authorization" in rejected(method, path, query, {**headers, "authorization": bad}, body)
    unsigned_date = headers["authorization"].replace(";x-sdk-date", "")
    reason = rejected(method, path, query, {**headers, "authorization": unsigned_date}, body)
    assert "x-sdk-date must be signed" in reason


def test_secrets_stay_out_of_reprs() -> None:
    auth = AkSkAuth(AK, SK, "proj123", security_token=TOKEN)
    token_auth = TokenAuth(TOKEN, "proj123")
    for text in (repr(auth), str(auth), repr(token_auth), str(token_auth)):
        assert SK not in text and TOKEN not in text
    assert AK in repr(auth)
    with pytest.raises(ValueError, match="secret key") as caught:
        AkSkAuth(AK, "", "proj123")
    assert SK not in str(caught.value)


# --- over real loopback HTTP -----------------------------------------------------------------------------


async def _verify_endpoint(request: Request) -> JSONResponse:
    scope = request.scope
    try:
        ak = verify_aksk(
            request.method,
            scope["raw_path"].decode("ascii"),
            scope["query_string"].decode("ascii"),
            request.headers,
            await request.body(),
            KEYS.get,
            datetime.now(UTC),
        )
    except SignatureInvalid as exc:
        return JSONResponse({"error_code": "APIGW.0301", "error_msg": exc.reason}, status_code=401)
    return JSONResponse({"ak": ak, "query": scope["query_string"].decode("ascii")})


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.headers.items()))


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    app = Starlette(routes=[Route("/echo", _echo), Route("/{path:path}", _verify_endpoint, methods=methods)])
    with serve_in_thread(app) as running:
        yield running


async def test_signed_requests_pass_verification_over_http(server: RunningServer) -> None:
    auth = AkSkAuth(AK, SK, "proj123", security_token=TOKEN)
    async with httpx.AsyncClient(base_url=server.url, auth=auth) as client:
        response = await client.post(
            "/v2/proj123/pools/pool%20a%2Fb~%E6%BC%A2/nodes/batch-unlock",
            params=[("b", "2"), ("a", "x y"), ("a", "+~/"), ("empty", "")],
            json={"nodeNames": ["os-node-created-xzz78"], "actions": ["delete"]},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"ak": AK, "query": "a=%2B~%2F&a=x%20y&b=2&empty="}

        response = await client.get("/v2/proj123/pools", params={"limit": 500, "continue": "tok=/+"})
        assert response.status_code == 200, response.text

        response = await client.put("/v2/proj123/raw", content=b"\x00\xffbinary", headers={"X-Trace": " t1 "})
        assert response.status_code == 200, response.text


async def test_tampering_after_signing_is_rejected_over_http(server: RunningServer) -> None:
    async def tamper(request: httpx.Request) -> None:
        request.url = request.url.copy_merge_params({"extra": "1"})

    auth = AkSkAuth(AK, SK, "proj123")
    async with httpx.AsyncClient(base_url=server.url, auth=auth, event_hooks={"request": [tamper]}) as client:
        response = await client.post("/v2/proj123/pools/p/nodes/batch-unlock", json={"nodeNames": ["n"]})
    assert response.status_code == 401
    assert response.json()["error_msg"] == "signature mismatch"

    # Wrong SK, over the wire too.
    async with httpx.AsyncClient(base_url=server.url, auth=AkSkAuth(AK, "wrong", "proj123")) as client:
        response = await client.get("/v2/proj123/pools")
    assert response.status_code == 401


async def test_token_auth_headers_over_http(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, auth=TokenAuth(TOKEN, "proj123")) as client:
        echoed = (await client.get("/echo")).json()
    assert echoed["x-auth-token"] == TOKEN
    assert echoed["x-project-id"] == "proj123"
    assert "authorization" not in echoed
    async with httpx.AsyncClient(base_url=server.url, auth=TokenAuth(TOKEN, None)) as client:
        echoed = (await client.get("/echo")).json()
    assert "x-project-id" not in echoed
    assert json.dumps(echoed).count(TOKEN) == 1


def test_hop_by_hop_and_underscore_headers_are_not_signed() -> None:
    request = httpx.Request(
        "GET",
        f"https://{HOST}/v2/p/pools",
        headers={"Connection": "keep-alive", "X_Under": "1", "X-Trace": " a "},
    )
    AkSkAuth(AK, SK, None, clock=fixed_clock).sign(request)
    assert "SignedHeaders=host;x-sdk-date;x-trace," in request.headers["Authorization"]
    assert request.headers["X-Trace"] == "a"  # sent stripped, as signed
    assert "X-Project-Id" not in request.headers
