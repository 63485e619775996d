"""`GET /metrics` after a scenario shows exactly what the scenario did, checked against the simulator's and the
Slack stand-in's own records of the calls they received."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.requests import RequestState
from bot.sandbox.driver import SlackDriver
from bot.sandbox.stack import LocalStack
from bot.slack import ids
from bot.store import Store
from tests.e2e.conftest import APPROVER, CHANNEL, REQUESTER, STRANGER
from tests.e2e.helpers import ephemeral_texts, make_request, wait_for_state, wait_until


class Scrape:
    """One scrape of /metrics: samples by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            (sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels` (0 when there are none)."""
        return sum(
            value for n, have, value in self.samples if n == name and all(have.get(k) == v for k, v in labels.items())
        )

    def by(self, name: str, label: str) -> dict[str, float]:
        found: dict[str, float] = {}
        for n, have, value in self.samples:
            if n == name and label in have:
                found[have[label]] = found.get(have[label], 0) + value
        return found


async def scrape(bot_url: str) -> Scrape:
    async with httpx.AsyncClient() as client:
        response = await client.get(bot_url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def slack_calls_by_method(stack: LocalStack) -> dict[str, float]:
    return dict(Counter(call.method for call in stack.slack.calls()))


def modelarts_calls_by_route(stack: LocalStack) -> Mapping[str, float]:
    return dict(Counter(str(call.route) for call in stack.simulator.calls_snapshot()))


async def settled(stack: LocalStack, expected_outcomes: Mapping[str, float]) -> Scrape:
    """Scrape until the bot has finished all it was doing (counts, executing gauge, Slack calls all in)."""

    async def done() -> Scrape | None:
        current = await scrape(stack.bot_url)
        outcomes = {k: v for k, v in current.by("unlock_bot_requests_total", "outcome").items() if v}
        slack = current.by("unlock_bot_slack_api_calls_total", "method")
        quiet = current.total("unlock_bot_requests_executing") == 0
        return current if outcomes == expected_outcomes and quiet and slack == slack_calls_by_method(stack) else None

    try:
        return await wait_until(done, timeout=15, interval=0.1)
    except AssertionError:
        return await scrape(stack.bot_url)  # the assertions below then say what differs


async def test_scenario_counts(stack: LocalStack, driver: SlackDriver, store: Store) -> None:
    pool = "pool-prod-a"
    nodes = stack.simulator.node_names(pool)

    # A success, with one 503 from batch-unlock on the way (retried).
    stack.simulator.update_faults(fail_next=[503], routes=["batch_unlock"])
    message, first = await make_request(stack, driver, REQUESTER, f"{pool} {nodes[0]} {nodes[1]}")
    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, first)
    await wait_for_state(store, first, RequestState.SUCCEEDED)

    # A refusal: not a requester.
    await driver.command(STRANGER, CHANNEL, f"{pool} {nodes[2]}")
    await wait_until(lambda: ephemeral_texts(stack, STRANGER))

    # A partial failure: ModelArts reports one of three nodes failed.
    stack.simulator.update_faults(fail_nodes={nodes[4]})
    message, second = await make_request(stack, driver, REQUESTER, f"{pool} {nodes[2]} {nodes[3]} {nodes[4]}")
    await driver.click(APPROVER, CHANNEL, message.ts, ids.APPROVE_ACTION, second)
    await wait_for_state(store, second, RequestState.PARTIALLY_FAILED)

    # A denial, whose message update is rate-limited once by Slack (waited out, then sent again).
    message, third = await make_request(stack, driver, REQUESTER, f"{pool} {nodes[5]}")
    stack.slack.rate_limit("chat.update", 1)
    await driver.click(APPROVER, CHANNEL, message.ts, ids.DENY_ACTION, third)
    await wait_for_state(store, third, RequestState.DENIED)

    metrics = await settled(
        stack,
        {"created": 3, "refused": 1, "approved": 2, "denied": 1, "succeeded": 1, "partially_failed": 1},
    )
    outcomes = metrics.by("unlock_bot_requests_total", "outcome")
    assert outcomes == {
        "created": 3,
        "refused": 1,
        "approved": 2,
        "denied": 1,
        "cancelled": 0,
        "expired": 0,
        "succeeded": 1,
        "partially_failed": 1,
        "failed": 0,
    }
    assert metrics.by("unlock_bot_node_results_total", "status") == {"success": 4, "failed": 1, "unknown": 0}
    assert metrics.total("unlock_bot_requests_executing") == 0

    # ModelArts: one histogram observation per HTTP call the simulator received, by route and status.
    assert metrics.by("unlock_bot_modelarts_request_duration_seconds_count", "route") == modelarts_calls_by_route(stack)
    unlock_statuses = Counter(str(c.status) for c in stack.simulator.calls_snapshot("batch_unlock"))
    assert unlock_statuses == {"200": 2, "503": 1}
    for status, count in unlock_statuses.items():
        assert (
            metrics.total(
                "unlock_bot_modelarts_request_duration_seconds_count", route="batch_unlock", status_code=status
            )
            == count
        )
    assert metrics.by("unlock_bot_modelarts_retries_total", "route") == {"batch_unlock": 1}
    assert metrics.total("unlock_bot_modelarts_request_duration_seconds_sum") > 0

    # Slack: every Web API call the stand-in received, by method; the one 429 counted as a rate-limit hit.
    assert metrics.by("unlock_bot_slack_api_calls_total", "method") == slack_calls_by_method(stack)
    assert metrics.total("unlock_bot_slack_api_calls_total", method="chat.update", result="ratelimited") == 1
    assert metrics.by("unlock_bot_slack_rate_limited_total", "method") == {"chat.update": 1}
    assert metrics.total("unlock_bot_slack_api_calls_total", result="ok") == len(stack.slack.calls()) - 1


async def test_each_bot_serves_its_own_registry(stack: LocalStack, driver: SlackDriver) -> None:
    """Two bots in one process (as in these tests, or the demo) never share a counter."""
    second = stack.start_bot()
    async with stack.driver(second.url) as other:
        await other.command(STRANGER, CHANNEL, "pool-prod-a os-node-created-xzz78")
    await wait_until(lambda: ephemeral_texts(stack, STRANGER))
    mine, theirs = await scrape(stack.bot_url), await scrape(second.url)
    assert theirs.total("unlock_bot_requests_total", outcome="refused") == 1
    assert mine.total("unlock_bot_requests_total", outcome="refused") == 0
    assert "process_resident_memory_bytes" in mine.text  # process figures, per registry too
