"""Prometheus metrics for `GET /metrics`: what the bot decided, what ModelArts and Slack did, and how fast.

Every running bot (`Runtime`) owns one `Metrics` with its own `CollectorRegistry`, so several bots in one
process (tests, the demo) never share or double-register a series, and `/metrics` serves exactly that bot's
registry. Counters live in process memory: run one uvicorn worker per replica (the CLI does) and let
Prometheus sum the replicas.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.requests import NodeResult, NodeStatus

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Where a request ends up, plus `created` and `refused` (a command turned down before any request existed).
REQUEST_OUTCOMES = (
    "created",
    "refused",
    "approved",
    "denied",
    "cancelled",
    "expired",
    "succeeded",
    "partially_failed",
    "failed",
)
# ModelArts calls are seconds at worst (30 s timeout); Slack's 3-second budget sits in the middle.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SLACK_METHOD = re.compile(r"^[a-zA-Z]+(\.[a-zA-Z]+)+$")
_SLACK_ERROR = re.compile(r"^[a-z0-9_]{1,64}$")


class Metrics:
    """The bot's series, registered in `registry` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "unlock_bot_requests",
            "Unlock requests by outcome: one count per transition into it; `refused` counts refused commands",
            ["outcome"],
            registry=r,
        )
        self.node_results = Counter(
            "unlock_bot_node_results",
            "Per-node results of finished requests, by status",
            ["status"],
            registry=r,
        )
        self.requests_executing = Gauge(
            "unlock_bot_requests_executing",
            "Requests this process is executing (unlocking and reporting) right now",
            registry=r,
        )
        self.modelarts_duration = Histogram(
            "unlock_bot_modelarts_request_duration_seconds",
            "ModelArts HTTP calls (each attempt) by route and status code ('connect_error' / 'no_response' "
            "when there was none)",
            ["route", "status_code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.modelarts_retries = Counter(
            "unlock_bot_modelarts_retries",
            "ModelArts calls sent again after a retryable failure (429, 5xx, connection failure)",
            ["route"],
            registry=r,
        )
        self.slack_calls = Counter(
            "unlock_bot_slack_api_calls",
            "Slack Web API HTTP calls (each attempt) by method and result ('ok' or Slack's error code)",
            ["method", "result"],
            registry=r,
        )
        self.slack_rate_limited = Counter(
            "unlock_bot_slack_rate_limited",
            "Slack Web API calls answered with HTTP 429 (the client waits Retry-After and tries again)",
            ["method"],
            registry=r,
        )
        # Zero-valued series from the start, so a dashboard's rate() sees the first event.
        for outcome in REQUEST_OUTCOMES:
            self.requests.labels(outcome)
        for status in NodeStatus:
            self.node_results.labels(status.value)
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    # -- recording -----------------------------------------------------------------------------------------

    def request(self, outcome: str) -> None:
        if outcome not in REQUEST_OUTCOMES:
            raise ValueError(f"unknown request outcome {outcome!r}")
        self.requests.labels(outcome).inc()

    def results(self, results: Iterable[NodeResult]) -> None:
        # One increment per status, not per node: a 2,000-node request's labels() calls cost ~10 ms.
        for status, count in collections.Counter(NodeStatus(r.status).value for r in results).items():
            self.node_results.labels(status).inc(count)

    def modelarts_call(self, route: str, status_code: str, seconds: float) -> None:
        self.modelarts_duration.labels(route, status_code).observe(seconds)

    def modelarts_retry(self, route: str) -> None:
        self.modelarts_retries.labels(route).inc()

    def slack_call(self, method: str, result: str, *, rate_limited: bool = False) -> None:
        self.slack_calls.labels(method, result).inc()
        if rate_limited:
            self.slack_rate_limited.labels(method).inc()

    # -- reading -------------------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of this bot's registry."""
        return generate_latest(self.registry)


def slack_method(url: str) -> str:
    """`chat.postMessage` from `https://slack.com/api/chat.postMessage`; anything odd is `other`."""
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name if _SLACK_METHOD.match(name) else "other"


def slack_result(response: HttpResponse | None) -> str:
    """`ok`, Slack's error code (`ratelimited`, `not_in_channel`…), `http_<status>`, or `connection_error`."""
    if response is None:
        return "connection_error"
    body = response.body if isinstance(response.body, dict) else {}
    if body.get("ok") is True:
        return "ok"
    error = body.get("error")
    if isinstance(error, str) and _SLACK_ERROR.match(error):
        return error
    if response.status_code == 429:
        return "ratelimited"
    return f"http_{response.status_code}"


class SlackCallObserver(AsyncRetryHandler):
    """Counts every Web API HTTP call as slack_sdk makes it; never asks for a retry itself.

    slack_sdk asks its retry handlers, in order, after every attempt and stops at the first that wants a
    retry, so this one must come first in the list to see each attempt exactly once.
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(max_retry_count=0)
        self.metrics = metrics

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        rate_limited = response is not None and response.status_code == 429
        self.metrics.slack_call(slack_method(request.url), slack_result(response), rate_limited=rate_limited)
        return False
