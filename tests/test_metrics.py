"""Metrics plumbing without a running bot: registries are per instance, the hooks label what they see."""

from __future__ import annotations

import json

import httpx
import pytest
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.metrics import Metrics, SlackCallObserver, slack_method, slack_result
from bot.modelarts.auth import TokenAuth
from bot.modelarts.client import ModelArtsClient, RetryPolicy, _route


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.request("created")
    assert value(first, "unlock_bot_requests_total", outcome="created") == 1
    assert value(second, "unlock_bot_requests_total", outcome="created") == 0
    with pytest.raises(ValueError, match="unknown request outcome"):
        first.request("exploded")


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("GET", "/v2/p/pools", "list_pools"),
        ("GET", "/v2/p/pools/pool-a/nodes", "list_nodes"),
        ("GET", "/v2/p/pools/pool-a/nodes/batch-unlock", "get_node"),  # a node may be called anything
        ("POST", "/v2/p/pools/pool-a/nodes/batch-unlock", "batch_unlock"),
        ("POST", "/v2/p/pools/pool-a/nodes/batch-lock", "batch_lock"),
    ],
)
def test_modelarts_routes(method: str, path: str, route: str) -> None:
    assert _route(method, path) == route


def test_slack_labels() -> None:
    assert slack_method("https://slack.com/api/chat.postMessage") == "chat.postMessage"
    assert slack_method("http://127.0.0.1:9/api/usergroups.users.list?x=1") == "usergroups.users.list"
    assert slack_method("https://files.slack.com/upload/v1/ABC") == "other"
    assert slack_result(HttpResponse(status_code=200, headers={}, body={"ok": True})) == "ok"
    assert slack_result(HttpResponse(status_code=200, headers={}, body={"ok": False, "error": "not_in_channel"})) == (
        "not_in_channel"
    )
    assert slack_result(HttpResponse(status_code=429, headers={}, body=None)) == "ratelimited"
    assert slack_result(HttpResponse(status_code=502, headers={}, body={"ok": False, "error": "<b>Bad</b>"})) == (
        "http_502"
    )
    assert slack_result(None) == "connection_error"


async def test_slack_observer_counts_and_never_retries() -> None:
    metrics = Metrics(process=False)
    observer = SlackCallObserver(metrics)
    request = HttpRequest(method="POST", url="https://slack.com/api/chat.update", headers={})
    limited = HttpResponse(status_code=429, headers={"retry-after": ["1"]}, body={"ok": False, "error": "ratelimited"})
    assert await observer.can_retry_async(state=RetryState(), request=request, response=limited) is False
    assert await observer.can_retry_async(state=RetryState(), request=request, error=OSError("reset")) is False
    assert value(metrics, "unlock_bot_slack_api_calls_total", method="chat.update", result="ratelimited") == 1
    assert value(metrics, "unlock_bot_slack_api_calls_total", method="chat.update", result="connection_error") == 1
    assert value(metrics, "unlock_bot_slack_rate_limited_total", method="chat.update") == 1


async def test_modelarts_client_observes_every_attempt_and_retry() -> None:
    answers = iter([503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/pools"):
            raise httpx.ConnectError("refused", request=request)
        names = json.loads(request.content)["nodeNames"]
        status = next(answers)
        body = {"nodes": [{"name": n, "status": "success"} for n in names]} if status == 200 else {}
        return httpx.Response(status, json=body, headers={"X-Request-Id": "r1"})

    async def no_sleep(seconds: float) -> None:
        return None

    metrics = Metrics(process=False)
    async with ModelArtsClient(
        "https://modelarts.test",
        "p",
        TokenAuth("token", "p"),
        retry=RetryPolicy(max_attempts=2),
        transport=httpx.MockTransport(handler),
        sleep=no_sleep,
        metrics=metrics,
    ) as client:
        outcome = await client.batch_unlock("pool-a", ["n1", "n2"])
        assert outcome.succeeded == ["n1", "n2"]
        with pytest.raises(Exception, match="could not connect"):
            await client.list_pools()
    histogram = "unlock_bot_modelarts_request_duration_seconds_count"
    assert value(metrics, histogram, route="batch_unlock", status_code="503") == 1
    assert value(metrics, histogram, route="batch_unlock", status_code="200") == 1
    assert value(metrics, histogram, route="list_pools", status_code="connect_error") == 2
    assert value(metrics, "unlock_bot_modelarts_retries_total", route="batch_unlock") == 1
    assert value(metrics, "unlock_bot_modelarts_retries_total", route="list_pools") == 1
