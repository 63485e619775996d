"""When a batch may fan out at once: only right after a call proved the credentials, and only in waves that
cannot reach the gateway's lockout (5 bad signatures in a row); otherwise its first chunk goes alone."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx

from bot.modelarts.auth import TokenAuth
from bot.modelarts.client import GATEWAY_LOCKOUT_AFTER, ModelArtsClient
from bot.modelarts.errors import AuthenticationFailed

PROJECT = "proj-1"


class Api:
    """Answers list-nodes with `read_status` and every batch chunk with success, logging starts and ends."""

    def __init__(self, read_status: int = 200) -> None:
        self.read_status = read_status
        self.timeline: list[tuple[str, str]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            if self.read_status != 200:
                return httpx.Response(self.read_status, json={"error_code": "APIGW.0301", "error_msg": "bad"})
            return httpx.Response(200, json={"kind": "NodeList", "items": [], "metadata": {}})
        names = json.loads(request.content)["nodeNames"]
        self.timeline.append(("start", names[0]))
        await asyncio.sleep(0.005)
        self.timeline.append(("end", names[0]))
        return httpx.Response(200, json={"nodes": [{"name": n, "status": "success"} for n in names]})


def client_for(api: Api, concurrency: int) -> ModelArtsClient:
    return ModelArtsClient(
        "https://modelarts.example.com",
        PROJECT,
        TokenAuth("tok", PROJECT),
        chunk_size=10,
        concurrency=concurrency,
        transport=httpx.MockTransport(api),
    )


NODES = [f"node-{i:03d}" for i in range(60)]


async def test_a_fresh_client_sends_its_first_chunk_alone() -> None:
    api = Api()
    async with client_for(api, concurrency=4) as client:
        outcome = await client.batch_unlock("pool-a", NODES)
    assert len(outcome.succeeded) == 60
    assert api.timeline[:2] == [("start", "node-000"), ("end", "node-000")]


async def test_right_after_a_successful_call_the_first_wave_goes_at_once() -> None:
    api = Api()
    async with client_for(api, concurrency=4) as client:
        await client.list_nodes("pool-a")
        outcome = await client.batch_unlock("pool-a", NODES)
        assert len(outcome.succeeded) == 60
        assert [kind for kind, _ in api.timeline[:4]] == ["start"] * 4
        # and the batch's own success keeps it so for the next one
        api.timeline.clear()
        await client.batch_unlock("pool-a", NODES)
        assert [kind for kind, _ in api.timeline[:4]] == ["start"] * 4


async def test_after_a_401_the_first_chunk_goes_alone_again() -> None:
    api = Api()
    async with client_for(api, concurrency=4) as client:
        await client.list_nodes("pool-a")
        api.read_status = 401
        with contextlib.suppress(AuthenticationFailed):  # what matters is what the client learnt from it
            await client.list_nodes("pool-a")
        await client.batch_unlock("pool-a", NODES)
    assert api.timeline[:2] == [("start", "node-000"), ("end", "node-000")]


async def test_a_wave_as_large_as_the_lockout_never_goes_first() -> None:
    api = Api()
    async with client_for(api, concurrency=GATEWAY_LOCKOUT_AFTER) as client:
        await client.list_nodes("pool-a")
        await client.batch_unlock("pool-a", NODES)
    assert api.timeline[:2] == [("start", "node-000"), ("end", "node-000")]
