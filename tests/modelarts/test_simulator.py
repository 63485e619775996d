"""The ModelArts simulator over loopback HTTP: gateway auth, the five calls, pagination, faults, admin."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.modelarts.auth import AkSkAuth, TokenAuth
from bot.modelarts.models import LOCK_ANNOTATION
from bot.modelarts.sim_state import LOCK_ACTION_VALUE, SeedError, SimulatorState, generated_node_name
from bot.modelarts.simulator import create_app, main
from bot.serving import RunningServer, free_port, serve_in_thread

PROJECT = "sim-project"
POOLS = f"/v2/{PROJECT}/pools"
PROD = "pool-prod-a"
LOCKED_NODE = "os-node-created-xzz78"  # locked in the built-in seed
NODE_RE = re.compile(r"^os-node-created-[a-z0-9]{5}$")


@pytest.fixture(scope="module")
def state() -> SimulatorState:
    return SimulatorState.default()


@pytest.fixture(scope="module")
def server(state: SimulatorState) -> Iterator[RunningServer]:
    with serve_in_thread(create_app(state)) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(state: SimulatorState) -> None:
    state.reset()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, auth=AkSkAuth("SIMAK", "SIMSK", PROJECT), timeout=10) as c:
        yield c


@pytest.fixture
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def unlock_body(*nodes: str) -> dict[str, Any]:
    return {"nodeNames": list(nodes), "actions": ["delete"]}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error_code"] == code
    assert isinstance(body["error_msg"], str) and body["error_msg"]
    assert response.headers["X-Request-Id"]
    return body


# --- authentication and routing ------------------------------------------------------------------------


def test_signed_call_is_accepted_and_recorded(client: httpx.Client, state: SimulatorState) -> None:
    first = client.get(POOLS)
    second = client.get(POOLS)
    assert first.status_code == 200
    body = first.json()
    assert body["kind"] == "PoolList"
    names = [p["metadata"]["name"] for p in body["items"]]
    assert names == ["pool-prod-a", "pool-dev-b", "pool-big", "pool-stopped-c"]
    prod = body["items"][0]
    assert prod["metadata"]["labels"]["os.modelarts/name"] == "prod-a"
    assert prod["status"]["phase"] == "Running"
    ids = {first.headers["X-Request-Id"], second.headers["X-Request-Id"]}
    assert len(ids) == 2
    calls = state.calls_snapshot()
    assert [(c.method, c.path, c.status, c.ak_or_token_kind, c.ak) for c in calls] == [
        ("GET", POOLS, 200, "aksk", "SIMAK")
    ] * 2
    assert calls[0].request_id == first.headers["X-Request-Id"]
    assert calls[0].route == "list_pools"


def test_bad_signature_unknown_ak_and_no_credentials_are_401(server: RunningServer) -> None:
    for auth in (AkSkAuth("SIMAK", "WRONG-SK", PROJECT), AkSkAuth("NOSUCHAK", "SIMSK", PROJECT), None):
        response = httpx.get(server.url + POOLS, auth=auth)
        body = assert_error(response, 401, "APIGW.0301")
        assert "WRONG-SK" not in body["error_msg"]


def test_stale_date_is_401(server: RunningServer) -> None:
    stale = AkSkAuth("SIMAK", "SIMSK", PROJECT, clock=lambda: datetime.now(UTC) - timedelta(minutes=16))
    body = assert_error(httpx.get(server.url + POOLS, auth=stale), 401, "APIGW.0301")
    assert "X-Sdk-Date" in body["error_msg"]
    recent = AkSkAuth("SIMAK", "SIMSK", PROJECT, clock=lambda: datetime.now(UTC) - timedelta(minutes=14))
    assert httpx.get(server.url + POOLS, auth=recent).status_code == 200


def test_token_auth(server: RunningServer, state: SimulatorState) -> None:
    ok = httpx.get(server.url + POOLS, auth=TokenAuth("sim-token", PROJECT))
    assert ok.status_code == 200
    assert state.calls_snapshot()[-1].ak_or_token_kind == "token"
    assert_error(httpx.get(server.url + POOLS, auth=TokenAuth("expired", PROJECT)), 401, "APIGW.0301")
    assert state.calls_snapshot()[-1].ak_or_token_kind is None


def test_ak_is_locked_after_five_bad_signatures(server: RunningServer, client: httpx.Client) -> None:
    bad = AkSkAuth("SIMAK", "WRONG-SK", PROJECT)
    for _ in range(4):
        assert httpx.get(server.url + POOLS, auth=bad).status_code == 401
    assert client.get(POOLS).status_code == 200  # a good signature resets the count
    for _ in range(5):
        assert httpx.get(server.url + POOLS, auth=bad).status_code == 401
    body = assert_error(client.get(POOLS), 401, "APIGW.0301")
    assert "locked" in body["error_msg"]


def test_project_mismatch_is_403(server: RunningServer, client: httpx.Client) -> None:
    other = AkSkAuth("SIMAK", "SIMSK", "other-project")
    assert_error(httpx.get(server.url + "/v2/other-project/pools", auth=other), 403, "APIGW.0302")
    # X-Project-Id (signed) says sim-project, the path another one.
    assert_error(client.get("/v2/other-project/pools"), 403, "APIGW.0302")
    token_other = TokenAuth("sim-token", "other-project")
    assert_error(httpx.get(server.url + POOLS, auth=token_other), 403, "APIGW.0302")


def test_unknown_route_and_method_are_apigw_404(server: RunningServer, client: httpx.Client) -> None:
    assert_error(httpx.get(server.url + "/v1/nothing/here"), 404, "APIGW.0101")
    assert_error(client.get(f"/v2/{PROJECT}/pools/{PROD}/nodes/a/b"), 404, "APIGW.0101")
    assert_error(client.delete(f"{POOLS}/{PROD}"), 404, "APIGW.0101")
    assert_error(client.post(f"{POOLS}/{PROD}/nodes/batch-drain", json=unlock_body("x")), 404, "APIGW.0101")


def test_unknown_pool_and_node(client: httpx.Client) -> None:
    for response in (
        client.get(f"{POOLS}/pool-nope/nodes"),
        client.get(f"{POOLS}/pool-nope/nodes/{LOCKED_NODE}"),
        client.post(f"{POOLS}/pool-nope/nodes/batch-unlock", json=unlock_body(LOCKED_NODE)),
        client.post(f"{POOLS}/pool-nope/nodes/batch-lock", json=unlock_body(LOCKED_NODE)),
    ):
        body = assert_error(response, 404, "ModelArts.50015001")
        assert body["error_msg"] == "pool not found"
    assert_error(client.get(f"{POOLS}/{PROD}/nodes/os-node-created-zzzzz"), 404, "ModelArts.50015002")


# --- list pools filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "Abnormal"}, ["pool-stopped-c"]),
        ({"status": "running"}, ["pool-prod-a", "pool-dev-b", "pool-big"]),
        ({"labelSelector": "team=research"}, ["pool-stopped-c"]),
        ({"labelSelector": "os.modelarts/name=prod-a"}, ["pool-prod-a"]),
        ({"labelSelector": "os.modelarts/name!=prod-a,!team"}, ["pool-dev-b", "pool-big"]),
        ({"labelSelector": "team"}, ["pool-stopped-c"]),
        ({"workspaceId": "ws-research"}, ["pool-stopped-c"]),
        ({"workspaceId": "0", "status": "Running", "labelSelector": "os.modelarts/name==big"}, ["pool-big"]),
    ],
)
def test_list_pools_filters(client: httpx.Client, params: dict[str, str], expected: list[str]) -> None:
    response = client.get(POOLS, params=params)
    assert response.status_code == 200
    assert [p["metadata"]["name"] for p in response.json()["items"]] == expected


def test_list_pools_bad_selector(client: httpx.Client) -> None:
    assert_error(client.get(POOLS, params={"labelSelector": "a=b,,c"}), 400, "ModelArts.50004000")


# --- nodes and pagination --------------------------------------------------------------------------------


def test_pagination_over_1200_nodes(client: httpx.Client, state: SimulatorState) -> None:
    names: list[str] = []
    seen_meta: list[tuple[int, bool]] = []
    token = ""
    while True:
        params = {"limit": "500", **({"continue": token} if token else {})}
        response = client.get(f"{POOLS}/pool-big/nodes", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["kind"] == "NodeList"
        names += [n["metadata"]["name"] for n in body["items"]]
        token = body["metadata"]["continue"]
        seen_meta.append((body["metadata"]["remainingItemCount"], bool(token)))
        if not token:
            break
    assert seen_meta == [(700, True), (200, True), (0, False)]
    assert len(names) == 1200 == len(set(names))
    assert names == state.node_names("pool-big")
    assert all(NODE_RE.match(n) for n in names)
    locked = [
        n
        for page in (client.get(f"{POOLS}/pool-big/nodes", params={"limit": "500"}).json()["items"],)
        for n in page
        if n["metadata"]["annotations"].get(LOCK_ANNOTATION)
    ]
    assert locked  # the seed locks some


def test_default_limit_is_500_and_small_pages_work(client: httpx.Client) -> None:
    body = client.get(f"{POOLS}/pool-big/nodes").json()
    assert len(body["items"]) == 500 and body["metadata"]["remainingItemCount"] == 700
    small = client.get(f"{POOLS}/pool-dev-b/nodes", params={"limit": "3"}).json()
    assert len(small["items"]) == 3 and small["metadata"]["remainingItemCount"] == 5
    whole = client.get(f"{POOLS}/pool-dev-b/nodes").json()
    assert whole["metadata"] == {"continue": "", "remainingItemCount": 0} and len(whole["items"]) == 8


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "501"}, {"limit": "ten"}, {"continue": "garbage!"}])
def test_bad_limit_or_continue_is_400(client: httpx.Client, params: dict[str, str]) -> None:
    assert_error(client.get(f"{POOLS}/pool-big/nodes", params=params), 400, "ModelArts.50004000")


def test_continue_token_of_another_pool_is_rejected(client: httpx.Client) -> None:
    token = client.get(f"{POOLS}/pool-big/nodes", params={"limit": "1"}).json()["metadata"]["continue"]
    assert token
    response = client.get(f"{POOLS}/pool-dev-b/nodes", params={"continue": token})
    assert_error(response, 400, "ModelArts.50004000")


def test_node_shape(client: httpx.Client) -> None:
    node = client.get(f"{POOLS}/{PROD}/nodes/{LOCKED_NODE}").json()
    assert node["metadata"]["name"] == LOCKED_NODE
    assert node["metadata"]["annotations"][LOCK_ANNOTATION] == LOCK_ACTION_VALUE
    assert node["metadata"]["labels"]["os.modelarts.node/nodepool"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", node["metadata"]["creationTimestamp"])
    assert node["spec"]["flavor"] == "modelarts.vm.gpu.8v100"
    assert node["status"] == {
        "phase": "Available",
        "az": "cn-north-4a",
        "privateIp": node["status"]["privateIp"],
    }


# --- lock / unlock ---------------------------------------------------------------------------------------


def _annotation(client: httpx.Client, pool: str, node: str) -> str | None:
    value: str | None = (
        client.get(f"{POOLS}/{pool}/nodes/{node}").json()["metadata"]["annotations"].get(LOCK_ANNOTATION)
    )
    return value


def _listed_lock(client: httpx.Client, pool: str, node: str) -> str | None:
    items = client.get(f"{POOLS}/{pool}/nodes").json()["items"]
    (match,) = [n for n in items if n["metadata"]["name"] == node]
    value: str | None = match["metadata"]["annotations"].get(LOCK_ANNOTATION)
    return value


def test_unlock_lock_round_trip(client: httpx.Client, state: SimulatorState) -> None:
    url = f"{POOLS}/{PROD}/nodes"
    unlocked = client.post(f"{url}/batch-unlock", json=unlock_body(LOCKED_NODE))
    assert unlocked.status_code == 200
    assert unlocked.json() == {"nodes": [{"name": LOCKED_NODE, "status": "success"}]}
    assert _annotation(client, PROD, LOCKED_NODE) is None
    assert _listed_lock(client, PROD, LOCKED_NODE) is None
    assert not state.is_locked(PROD, LOCKED_NODE)
    again = client.post(f"{url}/batch-unlock", json=unlock_body(LOCKED_NODE))  # idempotent
    assert again.json() == {"nodes": [{"name": LOCKED_NODE, "status": "success"}]}
    locked = client.post(f"{url}/batch-lock", json=unlock_body(LOCKED_NODE))
    assert locked.json() == {"nodes": [{"name": LOCKED_NODE, "status": "success"}]}
    assert _annotation(client, PROD, LOCKED_NODE) == LOCK_ACTION_VALUE
    assert _listed_lock(client, PROD, LOCKED_NODE) == LOCK_ACTION_VALUE


def test_node_not_in_pool_fails_alone(client: httpx.Client, state: SimulatorState) -> None:
    dev_node = state.node_names("pool-dev-b")[0]
    body = unlock_body("os-node-created-zzzzz", LOCKED_NODE, dev_node)
    response = client.post(f"{POOLS}/{PROD}/nodes/batch-unlock", json=body)
    assert response.status_code == 200
    assert response.json()["nodes"] == [
        {"name": "os-node-created-zzzzz", "status": "failed"},
        {"name": LOCKED_NODE, "status": "success"},
        {"name": dev_node, "status": "failed"},
    ]
    assert not state.is_locked(PROD, LOCKED_NODE)


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b"{}",
        json.dumps({"nodeNames": [], "actions": ["delete"]}).encode(),
        json.dumps({"nodeNames": "os-node-created-xzz78", "actions": ["delete"]}).encode(),
        json.dumps({"nodeNames": [1], "actions": ["delete"]}).encode(),
        json.dumps({"nodeNames": [""], "actions": ["delete"]}).encode(),
        json.dumps({"nodeNames": [LOCKED_NODE]}).encode(),
        json.dumps({"nodeNames": [LOCKED_NODE], "actions": ["lock"]}).encode(),
        json.dumps({"nodeNames": [LOCKED_NODE], "actions": ["delete", "delete"]}).encode(),
        json.dumps({"nodeNames": [LOCKED_NODE], "actions": "delete"}).encode(),
    ],
)
def test_batch_body_validation(client: httpx.Client, state: SimulatorState, content: bytes) -> None:
    response = client.post(
        f"{POOLS}/{PROD}/nodes/batch-unlock", content=content, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "ModelArts.50004000")
    assert state.is_locked(PROD, LOCKED_NODE)


# --- faults ----------------------------------------------------------------------------------------------


def test_latency_per_route(client: httpx.Client, state: SimulatorState) -> None:
    state.update_faults(latency_by_route={"list_pools": 0.4})
    started = time.monotonic()
    assert client.get(POOLS).status_code == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert client.get(f"{POOLS}/{PROD}/nodes/{LOCKED_NODE}").status_code == 200
    assert time.monotonic() - started < 0.3
    state.update_faults(latency_by_route={}, latency_seconds=0.3)
    with pytest.raises(httpx.ReadTimeout):
        client.get(POOLS, timeout=0.1)
    # The server still finishes the abandoned call; wait for it so it cannot leak into the next test.
    deadline = time.monotonic() + 5
    while len(state.calls_snapshot()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [c.status for c in state.calls_snapshot()] == [200, 200, 200]


def test_fail_next_queue_then_success(client: httpx.Client, state: SimulatorState) -> None:
    state.update_faults(fail_next=[503, 500], retry_after=3)
    url = f"{POOLS}/{PROD}/nodes/batch-unlock"
    first = client.post(url, json=unlock_body(LOCKED_NODE))
    assert_error(first, 503, "ModelArts.50005003")
    assert first.headers["Retry-After"] == "3"
    assert_error(client.post(url, json=unlock_body(LOCKED_NODE)), 500, "ModelArts.50005000")
    assert state.is_locked(PROD, LOCKED_NODE)  # failed calls change nothing
    assert client.post(url, json=unlock_body(LOCKED_NODE)).status_code == 200
    assert not state.is_locked(PROD, LOCKED_NODE)
    assert [c.status for c in state.calls_snapshot()] == [503, 500, 200]


def test_error_rate_is_seeded_and_deterministic(client: httpx.Client, state: SimulatorState) -> None:
    def run() -> list[int]:
        state.set_faults({"seed": 42, "error_rate": 0.5, "error_statuses": [500, 503]})
        return [client.get(POOLS).status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert {500, 503, 200} == set(first)


def test_throttling_returns_429_with_retry_after(client: httpx.Client, state: SimulatorState) -> None:
    state.update_faults(throttle_rate=1.0, retry_after=7)
    response = client.get(POOLS)
    assert_error(response, 429, "APIGW.0308")
    assert response.headers["Retry-After"] == "7"


def test_faults_limited_to_routes(client: httpx.Client, state: SimulatorState) -> None:
    state.update_faults(routes=["batch_unlock"], fail_next=[500], error_rate=1.0, error_statuses=[503])
    assert client.get(POOLS).status_code == 200
    assert client.post(f"{POOLS}/{PROD}/nodes/batch-lock", json=unlock_body(LOCKED_NODE)).status_code == 200
    url = f"{POOLS}/{PROD}/nodes/batch-unlock"
    assert client.post(url, json=unlock_body(LOCKED_NODE)).status_code == 500
    assert client.post(url, json=unlock_body(LOCKED_NODE)).status_code == 503


def test_drop_next_drops_without_applying(client: httpx.Client, state: SimulatorState) -> None:
    state.update_faults(drop_next=1)
    url = f"{POOLS}/{PROD}/nodes/batch-unlock"
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(url, json=unlock_body(LOCKED_NODE))
    assert state.is_locked(PROD, LOCKED_NODE)
    assert state.get_faults().drop_next == 0
    (call,) = state.calls_snapshot()
    assert call.dropped and call.route == "batch_unlock"
    assert client.post(url, json=unlock_body(LOCKED_NODE)).status_code == 200  # the next one goes through


def test_drop_after_apply_applies_the_unlock(client: httpx.Client, state: SimulatorState) -> None:
    state.update_faults(drop_rate=1.0, drop_after_apply=True, routes=["batch_unlock"])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(f"{POOLS}/{PROD}/nodes/batch-unlock", json=unlock_body(LOCKED_NODE))
    assert not state.is_locked(PROD, LOCKED_NODE)
    assert _annotation(client, PROD, LOCKED_NODE) is None  # the read route is not dropped


def test_fail_nodes_always_fail(client: httpx.Client, state: SimulatorState) -> None:
    other = state.locked_nodes(PROD)[0]
    assert other != LOCKED_NODE
    state.update_faults(fail_nodes={LOCKED_NODE})
    response = client.post(f"{POOLS}/{PROD}/nodes/batch-unlock", json=unlock_body(LOCKED_NODE, other))
    assert response.json()["nodes"] == [
        {"name": LOCKED_NODE, "status": "failed"},
        {"name": other, "status": "success"},
    ]
    assert state.is_locked(PROD, LOCKED_NODE) and not state.is_locked(PROD, other)


def test_max_batch_nodes(client: httpx.Client, state: SimulatorState) -> None:
    state.update_faults(max_batch_nodes=2)
    nodes = state.node_names(PROD)[:3]
    response = client.post(f"{POOLS}/{PROD}/nodes/batch-unlock", json=unlock_body(*nodes))
    assert_error(response, 400, "ModelArts.50004000")


# --- admin endpoints -------------------------------------------------------------------------------------


def test_admin_faults_get_put_patch(admin: httpx.Client, state: SimulatorState) -> None:
    assert admin.get("/_sim/faults").json()["error_statuses"] == [500, 503]
    put = admin.put("/_sim/faults", json={"fail_next": [429], "fail_nodes": ["b", "a"], "retry_after": 2})
    assert put.status_code == 200
    assert put.json()["fail_nodes"] == ["a", "b"] and put.json()["fail_next"] == [429]
    patch = admin.patch("/_sim/faults", json={"latency_seconds": 0.01})
    assert patch.json()["fail_next"] == [429] and patch.json()["latency_seconds"] == 0.01
    assert state.get_faults().fail_nodes == {"a", "b"}
    replaced = admin.put("/_sim/faults", json={"drop_next": 2})
    assert replaced.json()["fail_next"] == [] and replaced.json()["drop_next"] == 2
    for bad in ({"error_rate": 2}, {"nonsense": 1}, {"fail_next": [200]}, {"routes": ["nope"]}):
        response = admin.patch("/_sim/faults", json=bad)
        assert response.status_code == 400 and response.json()["error"]
    assert admin.put("/_sim/faults", content=b"[1]").status_code == 400
    assert_error(admin.post("/_sim/faults"), 404, "APIGW.0101")  # no such admin method: like any unknown API


def test_admin_calls_and_reset(admin: httpx.Client, client: httpx.Client, state: SimulatorState) -> None:
    client.post(f"{POOLS}/{PROD}/nodes/batch-unlock", json=unlock_body(LOCKED_NODE))
    client.get(POOLS, params={"status": "Running"})
    calls = admin.get("/_sim/calls").json()
    assert calls["count"] == 2
    first = calls["calls"][0]
    assert first["method"] == "POST" and first["json_body"] == unlock_body(LOCKED_NODE)
    assert first["status"] == 200 and first["ak_or_token_kind"] == "aksk" and first["route"] == "batch_unlock"
    assert calls["calls"][1]["query"] == {"status": "Running"}
    assert admin.get("/_sim/calls", params={"route": "list_pools"}).json()["count"] == 1
    state.update_faults(drop_next=3)
    assert admin.post("/_sim/reset").json() == {"reset": True}
    assert state.is_locked(PROD, LOCKED_NODE)
    assert state.get_faults().drop_next == 0
    assert admin.get("/_sim/calls").json()["count"] == 0
    client.get(POOLS)
    assert admin.delete("/_sim/calls").json() == {"cleared": 1}
    assert state.calls_snapshot() == []


def test_admin_pools_and_nodes(admin: httpx.Client, client: httpx.Client, state: SimulatorState) -> None:
    summary = admin.get("/_sim/pools").json()
    assert summary["project_id"] == PROJECT
    prod = summary["pools"][0]
    assert (prod["name"], prod["node_count"], prod["locked_count"]) == (PROD, 24, 6)
    assert {"name": LOCKED_NODE, "phase": "Available", "locked": True} in prod["nodes"]
    assert "nodes" not in admin.get("/_sim/pools", params={"nodes": "false"}).json()["pools"][0]

    url = f"/_sim/pools/{PROD}/nodes/{LOCKED_NODE}"
    changed = admin.put(url, json={"locked": False, "phase": "Abnormal"})
    assert changed.json() == {"name": LOCKED_NODE, "phase": "Abnormal", "locked": False}
    node = client.get(f"{POOLS}/{PROD}/nodes/{LOCKED_NODE}").json()
    assert node["status"]["phase"] == "Abnormal" and LOCK_ANNOTATION not in node["metadata"]["annotations"]
    created = admin.put(f"/_sim/pools/{PROD}/nodes/os-node-created-new01", json={"locked": True})
    assert created.json() == {"name": "os-node-created-new01", "phase": "Available", "locked": True}
    assert client.get(f"{POOLS}/{PROD}/nodes/os-node-created-new01").status_code == 200
    assert admin.delete(f"/_sim/pools/{PROD}/nodes/os-node-created-new01").json() == {"removed": True}
    assert client.get(f"{POOLS}/{PROD}/nodes/os-node-created-new01").status_code == 404
    assert admin.put(url, json={"phase": "Sleeping"}).status_code == 400
    assert admin.put(url, json={"locked": "yes"}).status_code == 400
    assert admin.put(f"/_sim/pools/pool-nope/nodes/{LOCKED_NODE}", json={}).status_code == 404
    assert all(r.headers["X-Request-Id"] for r in (changed, created))


# --- concurrency -----------------------------------------------------------------------------------------


async def test_concurrent_calls_are_all_recorded(server: RunningServer, state: SimulatorState) -> None:
    nodes = state.node_names("pool-big")[:60]
    stop = threading.Event()
    observed: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            observed.append(len(state.calls_snapshot()))
            time.sleep(0.001)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, auth=AkSkAuth("SIMAK", "SIMSK", PROJECT)) as c:
            responses = await asyncio.gather(
                *(c.post(f"{POOLS}/pool-big/nodes/batch-lock", json=unlock_body(node)) for node in nodes)
            )
    finally:
        stop.set()
        thread.join()
    assert all(r.status_code == 200 for r in responses)
    assert len({r.headers["X-Request-Id"] for r in responses}) == 60
    assert len(state.calls_snapshot()) == 60
    assert all(state.is_locked("pool-big", n) for n in nodes)
    assert observed == sorted(observed)


# --- seeds and the entry point ---------------------------------------------------------------------------


def test_default_seed_layout() -> None:
    state = SimulatorState.default()
    assert state.project_id == PROJECT
    assert state.credentials == {"SIMAK": "SIMSK"} and state.tokens == {"sim-token"}
    counts = {p["name"]: p["node_count"] for p in state.summary(with_nodes=False)["pools"]}
    assert counts == {"pool-prod-a": 24, "pool-dev-b": 8, "pool-big": 1200, "pool-stopped-c": 2}
    assert state.node_names("pool-big") == SimulatorState.default().node_names("pool-big")  # deterministic
    assert generated_node_name("p", 0) == generated_node_name("p", 0)
    assert NODE_RE.match(generated_node_name("p", 0))


def test_seed_files(tmp_path: Path) -> None:
    seed = {
        "project_id": "p1",
        "credentials": {"AK1": "SK1"},
        "faults": {"fail_nodes": ["n1"], "seed": 3},
        "pools": [{"name": "pool-x", "node_count": 3, "locked_count": 1, "nodes": ["n1", {"name": "n2"}]}],
    }
    as_json = tmp_path / "seed.json"
    as_json.write_text(json.dumps(seed))
    as_yaml = tmp_path / "seed.yml"
    as_yaml.write_text("project_id: p1\ncredentials: {AK1: SK1}\npools:\n  - name: pool-x\n    node_count: 3\n")
    from_json = SimulatorState.from_file(as_json)
    assert from_json.project_id == "p1" and from_json.get_faults().fail_nodes == {"n1"}
    assert from_json.node_names("pool-x")[-2:] == ["n1", "n2"] and len(from_json.locked_nodes("pool-x")) == 1
    assert SimulatorState.from_file(as_yaml).node_names("pool-x") == from_json.node_names("pool-x")[:3]
    bad = tmp_path / "bad.yml"
    for text in (
        "- a list",
        "pools: [{node_count: 3}]",
        "faults: {error_rate: 5}",
        "pools: [{name: p, x: [}",
    ):
        bad.write_text(text)
        with pytest.raises(SeedError, match=r"bad\.yml"):
            SimulatorState.from_file(bad)
    with pytest.raises(SeedError, match="cannot read"):
        SimulatorState.from_file(tmp_path / "missing.yml")


def test_main_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--error-rate", "3"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["--route", "nope"])


def test_command_line_run(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.modelarts.simulator", "--port", str(port), "--fail-node", LOCKED_NODE],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner and PROJECT in banner
        assert "SIMAK" in banner and "simulator-only" in banner
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                faults = httpx.get(url + "/_sim/faults").json()
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert faults["fail_nodes"] == [LOCKED_NODE] and faults["error_rate"] == 0
        response = httpx.post(
            f"{url}{POOLS}/{PROD}/nodes/batch-unlock",
            json=unlock_body(LOCKED_NODE),
            auth=AkSkAuth("SIMAK", "SIMSK", PROJECT),
        )
        assert response.json() == {"nodes": [{"name": LOCKED_NODE, "status": "failed"}]}
    finally:
        proc.terminate()
        proc.wait(10)
