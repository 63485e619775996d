"""ModelArtsClient logic on httpx.MockTransport: chunks, retries, deadlines, bad answers; no real sleeping."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

import bot
from bot.config import Settings
from bot.modelarts.auth import AkSkAuth, TokenAuth
from bot.modelarts.client import BatchOutcome, ModelArtsClient, RetryPolicy
from bot.modelarts.errors import (
    AuthenticationFailed,
    BadRequest,
    BadResponse,
    ConnectionFailed,
    ModelArtsError,
    NotFound,
    OutcomeUnknown,
    PermissionDenied,
    PoolNotFound,
    ServerError,
    ServiceUnavailable,
    Throttled,
    error_from_response,
    parse_retry_after,
)
from bot.modelarts.models import LOCK_ANNOTATION, BatchNodesResponse, Node, Pool, is_locked
from bot.requests import NodeResult, NodeStatus

ENDPOINT = "https://modelarts.example.test"
PROJECT = "proj123"
UNLOCK_PATH = f"/v2/{PROJECT}/pools/pool-a/nodes/batch-unlock"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class FakeTime:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Recorder:
    """Wraps a handler: records each request, answers with `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.handler(request)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.method == "POST"]


def make_client(
    handler: Handler,
    fake: FakeTime | None = None,
    *,
    retry: RetryPolicy | None = None,
    rand: float = 1.0,
    **kwargs: Any,
) -> tuple[ModelArtsClient, Recorder, FakeTime]:
    fake = fake or FakeTime()
    recorder = Recorder(handler)
    client = ModelArtsClient(
        ENDPOINT,
        PROJECT,
        TokenAuth("tok-secret-123", PROJECT),
        retry=retry or RetryPolicy(),
        transport=httpx.MockTransport(recorder),
        sleep=fake.sleep,
        rand=lambda: rand,
        clock=fake.clock,
        **kwargs,
    )
    return client, recorder, fake


def ok_all(status: str = "success") -> Handler:
    async def handle(request: httpx.Request) -> httpx.Response:
        names = json.loads(request.content)["nodeNames"]
        return httpx.Response(
            200,
            json={"nodes": [{"name": n, "status": status} for n in names]},
            headers={"X-Request-Id": f"req-{names[0]}"},
        )

    return handle


def statuses(*codes: int, then: Handler | None = None, headers: dict[str, str] | None = None) -> Handler:
    """Answer with each status in turn (with a ModelArts-style error body), then with `then`."""
    queue = list(codes)

    async def handle(request: httpx.Request) -> httpx.Response:
        if queue:
            code = queue.pop(0)
            return httpx.Response(
                code,
                json={"error_code": f"TEST.{code}", "error_msg": f"status {code}"},
                headers={"X-Request-Id": f"rid-{code}", **(headers or {})},
            )
        assert then is not None, "more requests than expected"
        return await then(request)

    return handle


def nodes(n: int, prefix: str = "node") -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


# --- the happy path and what goes on the wire ---------------------------------------------------------------


async def test_single_chunk_success_and_wire_format() -> None:
    client, rec, _ = make_client(ok_all())
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1", "n2"])
    assert outcome.results == (
        NodeResult("n1", NodeStatus.SUCCESS, None, "req-n1"),
        NodeResult("n2", NodeStatus.SUCCESS, None, "req-n1"),
    )
    assert outcome.succeeded == ["n1", "n2"]
    assert outcome.failed == [] and outcome.unknown == [] and outcome.first_error is None
    assert outcome.attempts == 1 and outcome.request_ids == ("req-n1",)
    (request,) = rec.requests
    assert request.method == "POST"
    assert request.url.path == UNLOCK_PATH
    assert request.headers["User-Agent"] == f"unlock-bot/{bot.__version__}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Auth-Token"] == "tok-secret-123"
    assert json.loads(request.content) == {"nodeNames": ["n1", "n2"], "actions": ["delete"]}


async def test_batch_lock_uses_lock_path() -> None:
    client, rec, _ = make_client(ok_all())
    async with client:
        outcome = await client.batch_lock("pool-a", ["n1"])
    assert outcome.succeeded == ["n1"]
    assert rec.requests[0].url.path == f"/v2/{PROJECT}/pools/pool-a/nodes/batch-lock"


async def test_empty_request_sends_nothing() -> None:
    client, rec, _ = make_client(ok_all())
    async with client:
        outcome = await client.batch_unlock("pool-a", [])
    assert outcome == BatchOutcome(results=()) and rec.requests == []


async def test_chunks_merge_in_request_order_and_duplicates_are_dropped() -> None:
    names = nodes(250)
    requested = [*names, names[3], names[200]]  # duplicates are sent once, reported once

    async def handle(request: httpx.Request) -> httpx.Response:
        chunk = json.loads(request.content)["nodeNames"]
        await asyncio.sleep(0.001 * (3 - len(chunk) // 100))  # answer out of order
        reported = [{"name": n, "status": "failed" if n.endswith("7") else "success"} for n in reversed(chunk)]
        return httpx.Response(200, json={"nodes": reported}, headers={"X-Request-Id": f"rid-{chunk[0]}"})

    client, rec, _ = make_client(handle, chunk_size=100)
    async with client:
        outcome = await client.batch_unlock("pool-a", requested)
    assert [len(b["nodeNames"]) for b in rec.bodies()] == [100, 100, 50]
    assert sorted(n for b in rec.bodies() for n in b["nodeNames"]) == names
    assert [r.node for r in outcome.results] == names
    assert outcome.failed == [n for n in names if n.endswith("7")]
    assert len(outcome.succeeded) == 250 - 25
    assert outcome.results[150].request_id == "rid-node-0100"
    assert set(outcome.request_ids) == {"rid-node-0000", "rid-node-0100", "rid-node-0200"}
    assert outcome.attempts == 3 and outcome.errors == ()


async def test_concurrency_is_bounded_and_first_chunk_goes_alone() -> None:
    in_flight = 0
    peak = 0
    timeline: list[tuple[str, str]] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        first = json.loads(request.content)["nodeNames"][0]
        in_flight += 1
        peak = max(peak, in_flight)
        timeline.append(("start", first))
        await asyncio.sleep(0.005)
        timeline.append(("end", first))
        in_flight -= 1
        return await ok_all()(request)

    client, _, _ = make_client(handle, chunk_size=10, concurrency=3)
    async with client:
        outcome = await client.batch_unlock("pool-a", nodes(100))
    assert len(outcome.succeeded) == 100
    assert peak == 3  # really parallel, never more than `concurrency`
    assert timeline[:2] == [("start", "node-0000"), ("end", "node-0000")]


async def test_per_node_failure_reason_from_entry() -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "nodes": [
                    {"name": "n1", "status": "success"},
                    {"name": "n2", "status": "failed", "message": "node is being deleted"},
                ]
            },
        )

    client, _, _ = make_client(handle)
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1", "n2"])
    assert outcome.succeeded == ["n1"] and outcome.failed == ["n2"]
    assert outcome.results[1].reason == "ModelArts reported this node failed: node is being deleted"


# --- retries


async def test_503_twice_then_success_with_backoff() -> None:
    client, rec, fake = make_client(statuses(503, 503, then=ok_all()))
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1"])
    assert outcome.succeeded == ["n1"] and outcome.errors == ()
    assert outcome.attempts == 3 and len(rec.requests) == 3
    assert fake.sleeps == [0.5, 1.0]  # rand=1.0: the full capped exponential delay
    assert outcome.request_ids == ("rid-503", "req-n1")


async def test_full_jitter_uses_the_random_source_and_caps() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    assert [policy.backoff(a, lambda: 0.5) for a in (1, 2, 3, 4, 5)] == [0.25, 0.5, 1.0, 1.5, 1.5]
    assert RetryPolicy(jitter=False).backoff(3, lambda: 0.0) == 2.0
    client, _, fake = make_client(statuses(502, 502, then=ok_all()), rand=0.25)
    async with client:
        await client.batch_unlock("pool-a", ["n1"])
    assert fake.sleeps == [0.125, 0.25]


@pytest.mark.parametrize(
    ("code", "error_type", "status"),
    [
        (429, Throttled, NodeStatus.FAILED),
        (503, ServiceUnavailable, NodeStatus.FAILED),
        (500, ServerError, NodeStatus.UNKNOWN),
        (502, ServerError, NodeStatus.UNKNOWN),
        (504, ServerError, NodeStatus.UNKNOWN),
    ],
)
async def test_retryable_statuses_exhaust_max_attempts(
    code: int, error_type: type[ModelArtsError], status: NodeStatus
) -> None:
    client, rec, fake = make_client(statuses(*[code] * 10), retry=RetryPolicy(max_attempts=4))
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1", "n2"])
    assert len(rec.requests) == 4 and outcome.attempts == 4 and len(fake.sleeps) == 3
    assert [r.status for r in outcome.results] == [status, status]
    (error,) = outcome.errors
    assert type(error) is error_type and error.status == code and error.error_code == f"TEST.{code}"
    assert outcome.results[0].request_id == f"rid-{code}"
    assert f"TEST.{code}" in (outcome.results[0].reason or "")


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (400, BadRequest),
        (401, AuthenticationFailed),
        (403, PermissionDenied),
        (404, PoolNotFound),
        (409, BadRequest),
    ],
)
async def test_client_errors_are_never_retried(code: int, error_type: type[ModelArtsError]) -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        body = {"error_code": "ModelArts.50015001", "error_msg": "pool not found"} if code == 404 else {}
        return httpx.Response(code, json=body, headers={"X-Request-Id": "rid-x"})

    client, rec, fake = make_client(handle)
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1"])
    assert len(rec.requests) == 1 and fake.sleeps == []
    assert outcome.failed == ["n1"]
    assert type(outcome.first_error) is error_type
    assert outcome.results[0].request_id == "rid-x"


async def test_500_then_400_is_unknown_because_the_first_may_have_applied() -> None:
    client, _, _ = make_client(statuses(500, 400))
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1"])
    assert outcome.unknown == ["n1"]
    assert isinstance(outcome.first_error, BadRequest)
    assert "may have been applied" in (outcome.results[0].reason or "")


async def test_retry_after_is_honoured() -> None:
    client, _, fake = make_client(statuses(429, then=ok_all(), headers={"Retry-After": "3"}))
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1"])
    assert outcome.succeeded == ["n1"] and fake.sleeps == [3.0]


async def test_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    client, rec, fake = make_client(
        statuses(429, then=ok_all(), headers={"Retry-After": "120"}), retry=RetryPolicy(deadline_seconds=60)
    )
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1"])
    assert len(rec.requests) == 1 and fake.sleeps == []
    assert outcome.failed == ["n1"]
    error = outcome.first_error
    assert isinstance(error, Throttled) and error.retry_after == 120.0


async def test_deadline_is_overall_not_per_attempt() -> None:
    # Each attempt says "retry after 4 s"; a 10 s deadline allows attempts at t=0, 4 and 8 only.
    client, rec, fake = make_client(
        statuses(*[503] * 10, headers={"Retry-After": "4"}),
        retry=RetryPolicy(max_attempts=10, deadline_seconds=10),
    )
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1"])
    assert len(rec.requests) == 3 and fake.sleeps == [4.0, 4.0]
    assert outcome.failed == ["n1"] and isinstance(outcome.first_error, ServiceUnavailable)


async def test_deadline_is_shared_by_all_chunks() -> None:
    async def slow_then_fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "4"})

    fake = FakeTime()
    client, rec, _ = make_client(
        slow_then_fail,
        fake,
        chunk_size=1,
        concurrency=1,
        retry=RetryPolicy(max_attempts=10, deadline_seconds=10),
    )
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1", "n2"])
    # n1 uses the whole deadline (t=0,4,8); n2 then gets its first attempt but no retry.
    assert len(rec.requests) == 4 and fake.sleeps == [4.0, 4.0]
    assert outcome.failed == ["n1", "n2"] and len(outcome.errors) == 2


async def test_connect_errors_are_retried_even_for_batches() -> None:
    calls = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return await ok_all()(request)

    client, _, _ = make_client(handle)
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1"])
    assert outcome.succeeded == ["n1"] and outcome.attempts == 2


async def test_connect_errors_exhausted_are_failed_not_unknown() -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, _, _ = make_client(handle, retry=RetryPolicy(max_attempts=2))
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1"])
    assert outcome.failed == ["n1"] and isinstance(outcome.first_error, ConnectionFailed)
    assert outcome.first_error.status is None


@pytest.mark.parametrize(
    "exc_type", [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteTimeout]
)
async def test_batch_is_not_resent_after_it_may_have_arrived(exc_type: type[httpx.TransportError]) -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        raise exc_type("gone", request=request)

    client, rec, fake = make_client(handle)
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1", "n2"])
    assert len(rec.requests) == 1 and fake.sleeps == []
    assert outcome.unknown == ["n1", "n2"] and isinstance(outcome.first_error, OutcomeUnknown)


# --- stopping after 401/403/404


async def test_401_on_first_chunk_stops_all_other_chunks() -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401,
            json={"error_code": "APIGW.0301", "error_msg": "bad signature"},
            headers={"X-Request-Id": "r401"},
        )

    client, rec, _ = make_client(handle, chunk_size=10, concurrency=4)
    async with client:
        outcome = await client.batch_unlock("pool-a", nodes(45))
    assert len(rec.requests) == 1
    assert len(outcome.failed) == 45 and outcome.attempts == 1
    (error,) = outcome.errors
    assert isinstance(error, AuthenticationFailed) and error.error_code == "APIGW.0301"
    assert {r.reason for r in outcome.results} == {str(error)}
    assert {r.request_id for r in outcome.results} == {"r401"}


async def test_stop_error_mid_batch_leaves_unsent_chunks_failed_and_keeps_earlier_results() -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["nodeNames"][0] == "node-0010":
            return httpx.Response(403, json={"error_code": "APIGW.0302", "error_msg": "forbidden"})
        return await ok_all()(request)

    client, rec, _ = make_client(handle, chunk_size=10, concurrency=1)
    async with client:
        outcome = await client.batch_unlock("pool-a", nodes(40))
    assert len(rec.requests) == 2
    assert outcome.succeeded == nodes(10)
    assert outcome.failed == nodes(40)[10:]
    assert isinstance(outcome.first_error, PermissionDenied) and len(outcome.errors) == 1


async def test_stop_error_also_stops_a_chunk_waiting_to_retry() -> None:
    # Chunk 2 gets a 503 and waits to retry; meanwhile chunk 3 is told the pool does not exist.
    async def handle(request: httpx.Request) -> httpx.Response:
        first = json.loads(request.content)["nodeNames"][0]
        if first == "node-0001":
            return httpx.Response(503)
        if first == "node-0002":
            return httpx.Response(404, json={"error_code": "ModelArts.50015001", "error_msg": "pool not found"})
        return await ok_all()(request)

    gate = asyncio.Event()

    class SlowSleep(FakeTime):
        async def sleep(self, seconds: float) -> None:
            await gate.wait()
            await super().sleep(seconds)

    fake = SlowSleep()
    client, rec, _ = make_client(handle, fake, chunk_size=1, concurrency=4)
    async with client:
        task = asyncio.create_task(client.batch_unlock("pool-a", nodes(3)))
        while len(rec.requests) < 3:
            await asyncio.sleep(0.001)
        gate.set()
        outcome = await task
    assert len(rec.requests) == 3  # node-0001 was not re-sent
    assert outcome.succeeded == ["node-0000"]
    assert outcome.failed == ["node-0001", "node-0002"]
    assert isinstance(outcome.first_error, PoolNotFound)
    assert "pool not found" in (outcome.results[1].reason or "")


# --- bad 200 answers


def answer(body: bytes | dict[str, Any]) -> Handler:
    async def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(200, content=body, headers={"X-Request-Id": "rid-bad"})
        return httpx.Response(200, json=body, headers={"X-Request-Id": "rid-bad"})

    return handle


@pytest.mark.parametrize(
    "body",
    [
        b"<html>gateway</html>",
        b"",
        {"items": []},
        {"nodes": "n1"},
        {"nodes": [{"status": "success"}]},
        [1, 2],
    ],
)
async def test_unreadable_200_makes_every_node_unknown(body: Any) -> None:
    client, _, _ = make_client(answer(json.dumps(body).encode() if isinstance(body, list) else body))
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1", "n2"])
    assert outcome.unknown == ["n1", "n2"]
    assert isinstance(outcome.first_error, BadResponse) and outcome.first_error.request_id == "rid-bad"
    assert outcome.attempts == 1


async def test_extra_nodes_are_ignored_but_reported() -> None:
    body = {"nodes": [{"name": "n1", "status": "success"}, {"name": "intruder", "status": "success"}]}
    client, _, _ = make_client(answer(body))
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1"])
    assert [r.node for r in outcome.results] == ["n1"] and outcome.succeeded == ["n1"]
    assert isinstance(outcome.first_error, BadResponse)
    assert "intruder" in str(outcome.first_error) and "rid-bad" in str(outcome.first_error)


async def test_omitted_nodes_are_unknown_never_success() -> None:
    client, _, _ = make_client(answer({"nodes": [{"name": "n1", "status": "success"}]}))
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1", "n2", "n3"])
    assert outcome.succeeded == ["n1"] and outcome.unknown == ["n2", "n3"]
    assert "omitted 2" in str(outcome.first_error)


async def test_odd_statuses_are_unknown() -> None:
    body = {
        "nodes": [
            {"name": "n1", "status": "pending"},
            "n2",  # the published reference shows bare names: no status, so not a success
            {"name": "n3", "status": "success"},
            {"name": "n3", "status": "failed"},
        ]
    }
    client, _, _ = make_client(answer(body))
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1", "n2", "n3"])
    assert outcome.unknown == ["n1", "n2", "n3"] and outcome.errors == ()
    assert "pending" in (outcome.results[0].reason or "")
    assert "conflicting" in (outcome.results[2].reason or "")


# --- error parsing


@pytest.mark.parametrize(
    "body",
    [
        {"error_code": "ModelArts.50015001", "error_msg": "pool not found"},
        {"errorCode": "ModelArts.50015001", "errorMsg": "pool not found"},
        {"code": "ModelArts.50015001", "message": "pool not found"},
        {"error": {"code": "ModelArts.50015001", "message": "pool not found"}},
    ],
)
def test_error_body_shapes(body: dict[str, Any]) -> None:
    error = error_from_response(404, json.dumps(body).encode(), httpx.Headers({"x-request-id": "abc"}))
    assert isinstance(error, PoolNotFound)
    assert (error.status, error.error_code, error.error_msg, error.request_id) == (
        404,
        "ModelArts.50015001",
        "pool not found",
        "abc",
    )
    assert str(error) == "pool not found (ModelArts.50015001, HTTP 404, request ID abc)"


def test_error_classification_and_fallback_text() -> None:
    def classify(code: int, body: bytes = b"not json", headers: dict[str, str] | None = None) -> ModelArtsError:
        return error_from_response(code, body, httpx.Headers(headers or {}))

    assert isinstance(classify(404, b'{"error_code":"APIGW.0101","error_msg":"no such API"}'), NotFound)
    assert not isinstance(classify(404, b'{"error_code":"APIGW.0101"}'), PoolNotFound)
    assert isinstance(classify(418), BadRequest)
    assert isinstance(classify(599), ServerError)
    throttled = classify(429, headers={"Retry-After": "7"})
    assert isinstance(throttled, Throttled) and throttled.retry_after == 7.0
    assert str(throttled) == "throttled by ModelArts (HTTP 429)"
    assert str(OutcomeUnknown()) == "no answer from ModelArts; the outcome is unknown"
    assert "request_id='r1'" in repr(classify(401, headers={"X-Request-Id": "r1"}))


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_errors_survive_pickling() -> None:
    import pickle

    error = Throttled(retry_after=2.0, status=429, error_code="APIGW.0308", request_id="r9")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is Throttled and copy.retry_after == 2.0 and str(copy) == str(error)


# --- reads


def api_node(name: str, *, locked: bool = False) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {"os.modelarts.node/nodepool": "np"},
            "annotations": {LOCK_ANNOTATION: "delete"} if locked else {},
        },
        "spec": {"flavor": "modelarts.vm.gpu"},
        "status": {"phase": "Available", "az": "cn-north-4a", "privateIp": "10.0.0.1"},
    }


async def test_list_nodes_follows_continue_tokens() -> None:
    all_nodes = nodes(7)

    async def handle(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("continue") or 0)
        page = all_nodes[start : start + 3]
        token = str(start + 3) if start + 3 < len(all_nodes) else ""
        return httpx.Response(
            200,
            json={"kind": "NodeList", "metadata": {"continue": token}, "items": [api_node(n) for n in page]},
        )

    client, rec, _ = make_client(handle)
    async with client:
        listed = await client.list_nodes("pool-a")
    assert [n.name for n in listed] == all_nodes
    assert [r.url.params.get("continue") for r in rec.requests] == [None, "3", "6"]
    assert all(r.url.params["limit"] == "500" for r in rec.requests)
    assert listed[0].flavor == "modelarts.vm.gpu" and listed[0].private_ip == "10.0.0.1"
    assert listed[0].az == "cn-north-4a" and listed[0].creation_timestamp == "2025-01-01T00:00:00Z"


async def test_list_nodes_rejects_a_looping_token() -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"metadata": {"continue": "same"}, "items": []})

    client, _, _ = make_client(handle)
    async with client:
        with pytest.raises(BadResponse):
            await client.list_nodes("pool-a")


async def test_list_pools_and_get_node() -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v2/{PROJECT}/pools":
            item = {
                "metadata": {"name": "pool-abc", "labels": {"os.modelarts/name": "Prod A"}},
                "spec": {},
                "status": {"phase": "Running"},
            }
            return httpx.Response(200, json={"kind": "PoolList", "items": [item]})
        if request.url.path.endswith("/nodes/n1"):
            return httpx.Response(200, json=api_node("n1", locked=True))
        return httpx.Response(404, json={"error_code": "ModelArts.50015002", "error_msg": "node not found"})

    client, _, _ = make_client(handle)
    async with client:
        (pool,) = await client.list_pools()
        node = await client.get_node("pool-abc", "n1")
        with pytest.raises(NotFound) as missing:
            await client.get_node("pool-abc", "n2")
    assert (pool.name, pool.display_name, pool.phase) == ("pool-abc", "Prod A", "Running")
    assert pool.raw["spec"] == {}
    assert node.name == "n1" and is_locked(node) and node.locked
    assert not isinstance(missing.value, PoolNotFound)


async def test_reads_retry_timeouts_and_raise_typed_errors() -> None:
    calls = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(404, json={"error_msg": "pool not found"}, headers={"X-Request-Id": "r404"})

    client, _, _ = make_client(handle)
    async with client:
        with pytest.raises(PoolNotFound) as err:
            await client.list_nodes("nope")
    assert calls == 2 and err.value.request_id == "r404"


async def test_reads_raise_bad_response_for_wrong_shapes() -> None:
    client, _, _ = make_client(answer(b"{not json"))
    async with client:
        with pytest.raises(BadResponse):
            await client.list_pools()
    client, _, _ = make_client(answer({"items": [{"metadata": {"labels": {}}}]}))
    async with client:
        with pytest.raises(BadResponse, match="pool list"):
            await client.list_pools()


def test_models_accept_flat_fields_and_lock_inference() -> None:
    node = Node(name="n1", annotations={LOCK_ANNOTATION: "  "})
    assert not is_locked(node)
    assert is_locked(Node(name="n1", annotations={LOCK_ANNOTATION: "delete"}))
    assert Node.model_validate(api_node("n2", locked=True)).locked
    assert Pool(name="p").display_name is None
    parsed = BatchNodesResponse.model_validate({"nodes": [{"name": "a", "status": "success"}]})
    assert parsed.nodes[0].status == "success"


# --- resolving unknown outcomes


async def test_resolve_unknown_rereads_lock_state() -> None:
    locked = {"n1": False, "n2": True}

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            raise httpx.ReadTimeout("slow", request=request)
        name = request.url.path.rsplit("/", 1)[1]
        if name in locked:
            return httpx.Response(200, json=api_node(name, locked=locked[name]), headers={"X-Request-Id": "g"})
        if name == "n3":
            return httpx.Response(404, json={"error_code": "ModelArts.50015002", "error_msg": "node not found"})
        return httpx.Response(500)

    client, _, _ = make_client(handle, retry=RetryPolicy(max_attempts=2))
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1", "n2", "n3", "n4"])
        assert outcome.unknown == ["n1", "n2", "n3", "n4"]
        resolved = await client.resolve_unknown("pool-a", outcome)
        relocked = await client.resolve_unknown("pool-a", outcome, expect_locked=True)
    assert [r.status for r in resolved.results] == [
        NodeStatus.SUCCESS,
        NodeStatus.FAILED,
        NodeStatus.FAILED,
        NodeStatus.UNKNOWN,
    ]
    assert "still locked" in (resolved.results[1].reason or "")
    assert "not found" in (resolved.results[2].reason or "")
    assert "re-reading the lock state failed" in (resolved.results[3].reason or "")
    assert resolved.attempts == 1 + 3 + 2  # the batch call, three GETs, n4's GET tried twice
    assert isinstance(resolved.errors[-1], ServerError)
    assert [r.status for r in relocked.results][:2] == [NodeStatus.FAILED, NodeStatus.SUCCESS]


async def test_resolve_unknown_many_nodes_uses_one_listing() -> None:
    names = nodes(120)

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            raise httpx.RemoteProtocolError("dropped", request=request)
        assert request.url.path.endswith("/nodes"), "expected a listing, not per-node reads"
        items = [api_node(n, locked=n.endswith("0")) for n in names[:-1]]  # the last node is gone
        return httpx.Response(200, json={"metadata": {"continue": ""}, "items": items})

    client, _, _ = make_client(handle, chunk_size=200)
    async with client:
        outcome = await client.resolve_unknown("pool-a", await client.batch_unlock("pool-a", names))
    assert outcome.attempts == 2
    assert set(outcome.failed) == {n for n in names if n.endswith("0")} | {names[-1]}
    assert len(outcome.succeeded) == 120 - 12 - 1 and outcome.unknown == []


async def test_resolve_unknown_without_unknowns_is_a_no_op() -> None:
    client, rec, _ = make_client(ok_all())
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1"])
        assert await client.resolve_unknown("pool-a", outcome) is outcome
    assert len(rec.requests) == 1


# --- settings and secrets


async def test_from_settings_with_aksk_signs_and_applies_limits() -> None:
    settings = Settings(
        huaweicloud_sdk_ak="AKTEST",
        huaweicloud_sdk_sk="SK-very-secret",
        huaweicloud_sdk_security_token="STS-very-secret",
        huaweicloud_sdk_project_id=PROJECT,
        modelarts_endpoint="https://private.example.test/ma/",
        unlock_bot_chunk_size=7,
        unlock_bot_concurrency=2,
        unlock_bot_max_attempts=3,
        unlock_bot_retry_deadline_seconds=12,
        unlock_bot_http_timeout_seconds=4,
    )
    recorder = Recorder(ok_all())
    client = ModelArtsClient.from_settings(settings, transport=httpx.MockTransport(recorder))
    assert (client.chunk_size, client.concurrency) == (7, 2)
    assert client.retry == RetryPolicy(max_attempts=3, deadline_seconds=12)
    assert isinstance(client._http.auth, AkSkAuth)
    assert client._http.timeout.read == 4
    async with client:
        await client.batch_unlock("pool-a", nodes(8))
    first = recorder.requests[0]
    assert str(first.url) == f"https://private.example.test/ma/v2/{PROJECT}/pools/pool-a/nodes/batch-unlock"
    assert first.headers["Authorization"].startswith("SDK-HMAC-SHA256 Access=AKTEST, SignedHeaders=")
    assert first.headers["X-Security-Token"] == "STS-very-secret"
    assert "SK-very-secret" not in repr(client) + repr(client._http.auth)


async def test_from_settings_with_token() -> None:
    settings = Settings(
        modelarts_auth_token="iam-token-secret",
        huaweicloud_sdk_project_id=PROJECT,
        modelarts_region="cn-north-4",
    )
    client = ModelArtsClient.from_settings(settings)
    assert client.endpoint == "https://modelarts.cn-north-4.myhuaweicloud.com"
    assert isinstance(client._http.auth, TokenAuth)
    await client.aclose()
    with pytest.raises(ValueError, match="credentials"):
        ModelArtsClient.from_settings(Settings(huaweicloud_sdk_project_id=PROJECT, modelarts_region="r"))


async def test_credentials_never_reach_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, _, _ = make_client(statuses(503, 500, 401), retry=RetryPolicy(max_attempts=5))
    async with client:
        outcome = await client.batch_unlock("pool-a", ["n1"])
    assert isinstance(outcome.first_error, AuthenticationFailed)
    assert caplog.records, "the retries should have been logged"
    text = caplog.text + " ".join(str(r) for r in outcome.results) + repr(outcome)
    assert "tok-secret-123" not in text
