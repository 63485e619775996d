"""ModelArtsClient against the ModelArts simulator over real loopback HTTP, signed with AK/SK."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bot.modelarts.auth import AkSkAuth, TokenAuth
from bot.modelarts.client import ModelArtsClient, RetryPolicy
from bot.modelarts.errors import AuthenticationFailed, OutcomeUnknown, PoolNotFound, ServiceUnavailable
from bot.modelarts.models import is_locked
from bot.modelarts.simulator import SimulatorState, create_app
from bot.requests import NodeStatus
from bot.serving import RunningServer, serve_in_thread

PROJECT = "sim-project"
FAST = RetryPolicy(max_attempts=5, deadline_seconds=10, base_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
def sim() -> Iterator[tuple[SimulatorState, RunningServer]]:
    state = SimulatorState.default()
    with serve_in_thread(create_app(state)) as server:
        yield state, server


@pytest.fixture
def state(sim: tuple[SimulatorState, RunningServer]) -> SimulatorState:
    sim[0].reset()  # pools, lock states, faults, lockouts and the call log back to the seed
    return sim[0]


@pytest.fixture
def url(sim: tuple[SimulatorState, RunningServer]) -> str:
    return sim[1].url


def client_for(url: str, *, auth: httpx.Auth | None = None, **kwargs: Any) -> ModelArtsClient:
    options: dict[str, Any] = {"retry": FAST, **kwargs}
    return ModelArtsClient(url, PROJECT, auth or AkSkAuth("SIMAK", "SIMSK", PROJECT), **options)


def api_calls(state: SimulatorState, route: str | None = None) -> list[Any]:
    return state.calls_snapshot(route)


class TamperingTransport(httpx.AsyncBaseTransport):
    """Changes the body after it was signed, as a man in the middle would."""

    def __init__(self, old: bytes, new: bytes) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.old, self.new = old, new

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        if self.old in body:
            tampered = body.replace(self.old, self.new)
            headers = httpx.Headers(request.headers)
            headers["Content-Length"] = str(len(tampered))
            request = httpx.Request(request.method, request.url, headers=headers, content=tampered)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_signed_calls_are_accepted(state: SimulatorState, url: str) -> None:
    async with client_for(url) as client:
        pools = await client.list_pools()
        node = await client.get_node("pool-prod-a", "os-node-created-xzz78")
    assert {"pool-prod-a", "pool-dev-b", "pool-big"} <= {p.name for p in pools}
    prod = next(p for p in pools if p.name == "pool-prod-a")
    assert prod.display_name == "prod-a" and prod.phase == "Running"
    assert node.name == "os-node-created-xzz78" and is_locked(node)
    calls = api_calls(state)
    assert [(c.route, c.status, c.ak_or_token_kind, c.ak) for c in calls] == [
        ("list_pools", 200, "aksk", "SIMAK"),
        ("get_node", 200, "aksk", "SIMAK"),
    ]


async def test_token_auth_is_accepted(state: SimulatorState, url: str) -> None:
    async with client_for(url, auth=TokenAuth("sim-token", PROJECT)) as client:
        outcome = await client.batch_unlock("pool-prod-a", ["os-node-created-xzz78"])
    assert outcome.succeeded == ["os-node-created-xzz78"]
    assert not state.is_locked("pool-prod-a", "os-node-created-xzz78")
    assert [c.ak_or_token_kind for c in api_calls(state)] == ["token"]


async def test_tampered_body_is_rejected_and_not_retried(state: SimulatorState, url: str) -> None:
    victim, other = "os-node-created-xzz78", "os-node-created-abn01"
    transport = TamperingTransport(victim.encode(), other.encode())
    async with client_for(url, transport=transport) as client:
        outcome = await client.batch_unlock("pool-prod-a", [victim])
    error = outcome.first_error
    assert isinstance(error, AuthenticationFailed)
    assert error.status == 401 and error.error_code == "APIGW.0301" and error.request_id
    assert outcome.failed == [victim] and outcome.attempts == 1
    calls = api_calls(state)
    assert len(calls) == 1 and calls[0].status == 401
    assert calls[0].json_body["nodeNames"] == [other]  # the server really got the altered body
    assert state.is_locked("pool-prod-a", victim) and state.is_locked("pool-prod-a", other)


async def test_401_is_not_retried_and_stops_the_batch(state: SimulatorState, url: str) -> None:
    names = state.node_names("pool-prod-a")
    async with client_for(url, auth=AkSkAuth("SIMAK", "WRONG-SK", PROJECT), chunk_size=5) as client:
        outcome = await client.batch_unlock("pool-prod-a", names)
        with pytest.raises(AuthenticationFailed) as raised:
            await client.list_pools()
    assert len(outcome.failed) == len(names) == 24
    assert isinstance(outcome.first_error, AuthenticationFailed) and outcome.attempts == 1
    assert raised.value.error_code == "APIGW.0301"
    assert [c.status for c in api_calls(state)] == [401, 401]  # one batch chunk, one read: nothing else
    assert "WRONG-SK" not in str(raised.value) + repr(outcome)


async def test_1200_nodes_listed_through_pagination(state: SimulatorState, url: str) -> None:
    async with client_for(url) as client:
        nodes = await client.list_nodes("pool-big")
    assert len(nodes) == 1200
    assert [n.name for n in nodes] == state.node_names("pool-big")
    assert {n.name for n in nodes if is_locked(n)} == set(state.locked_nodes("pool-big"))
    pages = api_calls(state, "list_nodes")
    assert len(pages) == 3
    assert "continue" not in pages[0].query and all("continue" in p.query for p in pages[1:])
    assert all(p.query["limit"] == "500" for p in pages)


async def test_450_nodes_unlocked_in_5_chunks_and_merged(state: SimulatorState, url: str) -> None:
    names = state.node_names("pool-big")[:449]
    for name in names:
        state.set_node("pool-big", name, locked=True)
    state.update_faults(fail_nodes={names[123]})
    # 450 distinct nodes (one the pool does not have), plus a duplicate that must be sent once.
    requested = [*names[:300], "no-such-node", *names[300:], names[7]]
    async with client_for(url, chunk_size=100, concurrency=4) as client:
        outcome = await client.batch_unlock("pool-big", requested)
    batches = api_calls(state, "batch_unlock")
    assert sorted(len(c.json_body["nodeNames"]) for c in batches) == [50, 100, 100, 100, 100]
    assert sum(c.json_body["nodeNames"].count(names[7]) for c in batches) == 1
    assert outcome.attempts == 5 and len(outcome.request_ids) == 5 and outcome.errors == ()
    assert [r.node for r in outcome.results] == requested[:-1] and len(outcome.results) == 450
    assert outcome.failed == [names[123], "no-such-node"]
    assert len(outcome.succeeded) == 448
    assert set(state.locked_nodes("pool-big")) & set(names) == {names[123]}
    by_call = {c.request_id: set(c.json_body["nodeNames"]) for c in batches}
    assert all(r.node in by_call[r.request_id or ""] for r in outcome.results)


async def test_503_twice_then_success(state: SimulatorState, url: str) -> None:
    state.update_faults(fail_next=[503, 503], routes=["batch_unlock"])
    async with client_for(url) as client:
        outcome = await client.batch_unlock("pool-dev-b", state.node_names("pool-dev-b")[:3])
    assert len(outcome.succeeded) == 3 and outcome.attempts == 3 and outcome.errors == ()
    assert [c.status for c in api_calls(state, "batch_unlock")] == [503, 503, 200]


async def test_503_until_attempts_run_out_is_failed(state: SimulatorState, url: str) -> None:
    state.update_faults(fail_next=[503] * 3, retry_after=0, routes=["batch_unlock"])
    node = "os-node-created-xzz78"
    async with client_for(url, retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)) as client:
        outcome = await client.batch_unlock("pool-prod-a", [node])
    assert outcome.failed == [node] and isinstance(outcome.first_error, ServiceUnavailable)
    assert len(api_calls(state)) == 3 and state.is_locked("pool-prod-a", node)


async def test_429_retry_after_is_honoured(state: SimulatorState, url: str) -> None:
    state.update_faults(fail_next=[429], retry_after=1, routes=["batch_unlock"])
    async with client_for(url) as client:
        started = time.monotonic()
        outcome = await client.batch_unlock("pool-prod-a", ["os-node-created-xzz78"])
        elapsed = time.monotonic() - started
    assert outcome.succeeded == ["os-node-created-xzz78"] and outcome.attempts == 2
    first, second = api_calls(state, "batch_unlock")
    assert (first.status, second.status) == (429, 200)
    assert elapsed >= 1.0
    assert (second.at - first.at).total_seconds() >= 0.99  # the server saw the retry a second later


async def test_drop_after_apply_is_unknown_then_resolved_as_success(state: SimulatorState, url: str) -> None:
    node = "os-node-created-xzz78"
    state.update_faults(drop_next=1, drop_after_apply=True, routes=["batch_unlock"])
    async with client_for(url) as client:
        outcome = await client.batch_unlock("pool-prod-a", [node])
        assert outcome.unknown == [node] and isinstance(outcome.first_error, OutcomeUnknown)
        assert outcome.attempts == 1  # never re-sent: the first one may have worked (and did)
        assert not state.is_locked("pool-prod-a", node)
        resolved = await client.resolve_unknown("pool-prod-a", outcome)
    assert resolved.succeeded == [node] and resolved.unknown == []
    assert [(c.route, c.dropped) for c in api_calls(state)] == [("batch_unlock", True), ("get_node", False)]


async def test_plain_drop_is_unknown_then_resolved_as_failed(state: SimulatorState, url: str) -> None:
    node = "os-node-created-xzz78"
    state.update_faults(drop_next=1, routes=["batch_unlock"])
    async with client_for(url) as client:
        outcome = await client.batch_unlock("pool-prod-a", [node])
        assert outcome.unknown == [node] and outcome.attempts == 1
        resolved = await client.resolve_unknown("pool-prod-a", outcome)
    assert resolved.failed == [node]
    assert "still locked" in (resolved.results[0].reason or "")
    assert state.is_locked("pool-prod-a", node)
    assert len(api_calls(state, "batch_unlock")) == 1


async def test_many_unknown_nodes_resolve_through_one_listing(state: SimulatorState, url: str) -> None:
    names = state.locked_nodes("pool-big")[:80]
    state.update_faults(drop_next=1, drop_after_apply=True, routes=["batch_unlock"])
    async with client_for(url) as client:
        outcome = await client.batch_unlock("pool-big", names)
        resolved = await client.resolve_unknown("pool-big", outcome)
    assert outcome.unknown == names
    assert resolved.succeeded == names
    assert len(api_calls(state, "list_nodes")) == 3 and api_calls(state, "get_node") == []


async def test_unknown_pool_is_pool_not_found_with_code_and_request_id(state: SimulatorState, url: str) -> None:
    async with client_for(url, chunk_size=1) as client:
        outcome = await client.batch_unlock("pool-nope", ["a", "b", "c"])
        with pytest.raises(PoolNotFound) as raised:
            await client.list_nodes("pool-nope")
    error = outcome.first_error
    assert isinstance(error, PoolNotFound)
    calls = api_calls(state)
    assert len(calls) == 2  # the batch stopped after its first chunk; then the read
    assert error.error_code == "ModelArts.50015001" and error.status == 404
    assert error.request_id == calls[0].request_id
    assert str(error) == f"pool not found (ModelArts.50015001, HTTP 404, request ID {calls[0].request_id})"
    assert [r.status for r in outcome.results] == [NodeStatus.FAILED] * 3
    assert raised.value.request_id == calls[1].request_id
