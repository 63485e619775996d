"""Fan-out: one approved request for 2,000 nodes, the simulator answering batch-unlock in 100 ms.

    python bench/fanout.py [--nodes 2000] [--latency 0.1] [--naive-nodes 200] [--runs 3]

The request is made the way a person makes it (a signed `/unlock-nodes` command naming every node, in the
simulator's pool of exactly that many locked nodes) and approved with a signed click on its Approve button.
Only `batch_unlock` gets the latency; the preview's listing and every other route answer at once. Wall time
runs from just before the click is sent to the stand-in's record of the last thread reply (both on this
machine's clock). The ideal is ceil(nodes / chunk) / concurrency * latency: every chunk a full round trip,
`concurrency` of them always in flight, nothing else costing anything.

The naive way (UNLOCK_BOT_CHUNK_SIZE=1, UNLOCK_BOT_CONCURRENCY=1: one node per call, one call at a time) is run
on `--naive-nodes` nodes of another pool and its wall time extrapolated linearly to `--nodes`; with
`--naive-nodes` equal to `--nodes` it is measured, not extrapolated (2,000 calls of 100 ms: over 3 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from common import (
    APPROVER,
    CHANNEL,
    FANOUT_POOL,
    NAIVE_POOL,
    RESULT_PAGE,
    Slack,
    Stack,
    all_text,
    approve_value,
    command_line,
    machine,
    median,
    running_stack,
    table,
    write_result,
)

from bot.slack import ids

TARGET_RATIO = 1.3
TARGET_REPLIES = 10
FINAL_STATES = ("succeeded", "partially_failed", "failed")


async def pool_nodes(slack: Slack, pool: str) -> list[str]:
    summary = await slack.sim("GET", "pools")
    return [n["name"] for p in summary["pools"] if p["name"] == pool for n in p["nodes"] if n["locked"]]


async def request_and_wait_for_message(slack: Slack, bot_url: str, pool: str, nodes: list[str]) -> dict[str, Any]:
    """Send the command and return the approval message it produced (bounded wait)."""
    before = {m["ts"] for m in (await slack.standin("messages", channel=CHANNEL))["messages"]}
    body = slack.command_body(f"{pool} {' '.join(nodes)} --reason 'bench: fan-out'")
    response = await slack.http.post(f"{bot_url}/slack/events", content=body, headers=slack.headers(body))
    response.raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for message in (await slack.standin("messages", channel=CHANNEL))["messages"]:
            is_new = message["ts"] not in before and message.get("thread_ts") in (None, message["ts"])
            if is_new and approve_value(message):
                return dict(message)
        await asyncio.sleep(0.2)
    raise TimeoutError("the approval message did not appear within 60 s")


def request_state(stack: Stack, request_id: str) -> str | None:
    """The request's state, read from the bot's SQLite file (read-only; cheaper than asking the stand-in)."""
    with contextlib.closing(sqlite3.connect(f"file:{stack.workdir / 'bench.db'}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT state FROM requests WHERE id = ?", (request_id,)).fetchone()
    return None if row is None else str(row[0])


async def wait_for_results(slack: Slack, ts: str, request_id: str, within: float) -> list[dict[str, Any]]:
    """Wait for the request to finish, then for every page of its results in the thread; return the replies.

    Polling reads the database, not the stand-in: the stand-in shares the CPUs with the bot and the simulator,
    and rendering the thread (with its 2,000-node parent) for each poll would slow down what is measured.
    """
    deadline = time.monotonic() + within
    while request_state(slack.stack, request_id) not in FINAL_STATES:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{request_id} did not finish within {within:.0f} s")
        await asyncio.sleep(0.1)
    while time.monotonic() < deadline:
        thread = (await slack.standin("messages", channel=CHANNEL, thread_ts=ts))["messages"]
        replies = [m for m in thread if m["ts"] != ts]
        pages: set[int] = set()
        total = None
        for reply in replies:
            found = RESULT_PAGE.search(reply.get("text", ""))
            if found and found["id"] == request_id:
                pages.add(int(found["page"] or 1))
                total = int(found["pages"] or 1)
        if total is not None and len(pages) == total:
            return replies
        await asyncio.sleep(0.5)
    raise TimeoutError(f"results of {request_id} not complete within {within:.0f} s")


async def one_run(stack: Stack, bot_url: str, pool: str, count: int, latency: float, within: float) -> dict[str, Any]:
    """Request `count` nodes of `pool`, approve, and measure until the last thread reply."""
    async with httpx.AsyncClient(timeout=60.0) as http:
        slack = Slack(stack, http)
        try:
            await slack.sim("POST", "reset")  # every node locked again, call log empty
            await slack.sim("PUT", "faults", {"latency_by_route": {"batch_unlock": latency}})
            nodes = (await pool_nodes(slack, pool))[:count]
            if len(nodes) < count:
                raise RuntimeError(f"{pool} has only {len(nodes)} locked nodes")
            message = await request_and_wait_for_message(slack, bot_url, pool, nodes)
            request_id = approve_value(message)
            assert request_id is not None
            await asyncio.sleep(1.0)  # let the command's follow-up work settle
            await slack.sim("DELETE", "calls")
            slack.driver.bot_url = f"{bot_url}/slack/events"
            click_began = time.time()
            await slack.driver.click(APPROVER, CHANNEL, message["ts"], ids.APPROVE_ACTION, request_id)
            started = slack.driver.sent_at  # the click leaves once the driver has read the message, as Slack has
            replies = await wait_for_results(slack, message["ts"], request_id, within)
            await asyncio.sleep(1.0)  # the final redraw of the approval message comes after the replies
            slack_calls = [c for c in (await slack.standin("calls"))["calls"] if float(c["at"]) >= click_began]
            sim_calls = (await slack.sim("GET", "calls"))["calls"]
            summary = await slack.sim("GET", "pools")
        finally:
            await slack.aclose()
    reply_times = [
        float(c["at"])
        for c in slack_calls
        if c["method"] == "chat.postMessage" and c["params"].get("thread_ts") == message["ts"]
    ]
    wall = max(reply_times) - started
    text = "\n".join(all_text(r) for r in replies)
    unnamed = [n for n in nodes if f"`{n}`" not in text]
    still_locked = sum(
        1 for p in summary["pools"] if p["name"] == pool for n in p["nodes"] if n["locked"] and n["name"] in set(nodes)
    )
    return {
        "nodes": count,
        "wall_s": wall,
        "modelarts_calls": len(sim_calls),
        "modelarts_calls_by_route": dict(Counter(c["route"] for c in sim_calls)),
        "slack_calls": len(slack_calls),
        "slack_calls_by_method": dict(Counter(c["method"] for c in slack_calls)),
        "slack_call_times_ms": [[c["method"], round((float(c["at"]) - started) * 1000, 1)] for c in slack_calls],
        "thread_replies": len(replies),
        "nodes_not_named": len(unnamed),
        "nodes_still_locked": still_locked,
    }


def ideal_seconds(nodes: int, chunk: int, concurrency: int, latency: float) -> float:
    return math.ceil(nodes / chunk) / concurrency * latency


def run_fanout(
    stack: Stack,
    *,
    nodes: int,
    latency: float,
    chunk: int,
    concurrency: int,
    runs: int,
    pool: str = FANOUT_POOL,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Start a bot with this chunk size and concurrency, do `runs` fan-outs, stop it."""
    bot, url = stack.start_bot(
        name=f"bot-chunk{chunk}-conc{concurrency}",
        UNLOCK_BOT_CHUNK_SIZE=str(chunk),
        UNLOCK_BOT_CONCURRENCY=str(concurrency),
    )
    profiler = stack.start_profiler(bot, profile) if profile else None
    try:
        within = 120.0 + 3 * nodes / chunk / concurrency * latency
        results = [asyncio.run(one_run(stack, url, pool, nodes, latency, within)) for _ in range(runs)]
    finally:
        if profiler is not None:
            stack.stop_profiler(profiler)
        stack.stop(bot)
    ideal = ideal_seconds(nodes, chunk, concurrency, latency)
    for result in results:
        result["ratio"] = result["wall_s"] / ideal
    return {
        "chunk_size": chunk,
        "concurrency": concurrency,
        "latency_s": latency,
        "ideal_s": ideal,
        "runs": results,
        "median_wall_s": median([r["wall_s"] for r in results]),
        "median_ratio": median([r["ratio"] for r in results]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per batch_unlock call (default 0.1)")
    parser.add_argument("--chunk", type=int, default=100, help="UNLOCK_BOT_CHUNK_SIZE (default 100, the default)")
    parser.add_argument("--concurrency", type=int, default=4, help="UNLOCK_BOT_CONCURRENCY (default 4, the default)")
    parser.add_argument("--runs", type=int, default=3, help="fan-outs with the default settings (median quoted)")
    parser.add_argument("--naive-nodes", type=int, default=200, help="nodes for the naive run (0 skips it)")
    parser.add_argument("--name", default="fanout", help="results file: bench/results/NAME.json (default fanout)")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="sample the tuned bot with py-spy into FILE")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    info = machine()
    with running_stack(keep_logs=args.keep_logs, fanout_nodes=args.nodes, naive_nodes=max(args.naive_nodes, 1)) as s:
        tuned = run_fanout(
            s,
            nodes=args.nodes,
            latency=args.latency,
            chunk=args.chunk,
            concurrency=args.concurrency,
            runs=args.runs,
            profile=args.profile,
        )
        naive = None
        if args.naive_nodes:
            naive = run_fanout(
                s, nodes=args.naive_nodes, latency=args.latency, chunk=1, concurrency=1, runs=1, pool=NAIVE_POOL
            )
    summary = summarise(tuned, naive, args)
    report(tuned, naive, summary, args)
    path = write_result(
        args.name,
        {
            "benchmark": "fanout",
            "command": command_line(),
            "machine": info,
            "config": {
                "nodes": args.nodes,
                "latency_s": args.latency,
                "latency_routes": ["batch_unlock"],
                "chunk_size": args.chunk,
                "concurrency": args.concurrency,
                "naive_nodes": args.naive_nodes,
                "database": "sqlite",
            },
            "summary": summary,
            "tuned": tuned,
            "naive": naive,
        },
    )
    print(f"Wrote {path}")


def summarise(tuned: dict[str, Any], naive: dict[str, Any] | None, args: argparse.Namespace) -> dict[str, Any]:
    worst_replies = max(r["thread_replies"] for r in tuned["runs"])
    summary: dict[str, Any] = {
        "wall_s": tuned["median_wall_s"],
        "ideal_s": tuned["ideal_s"],
        "ratio": tuned["median_ratio"],
        "modelarts_calls": median([r["modelarts_calls"] for r in tuned["runs"]]),
        "slack_calls": median([r["slack_calls"] for r in tuned["runs"]]),
        "thread_replies_max": worst_replies,
        "nodes_not_named_total": sum(r["nodes_not_named"] for r in tuned["runs"]),
        "nodes_still_locked_total": sum(r["nodes_still_locked"] for r in tuned["runs"]),
    }
    if naive is not None:
        run = naive["runs"][0]
        scale = args.nodes / naive["runs"][0]["nodes"]
        summary["naive"] = {
            "nodes_measured": run["nodes"],
            "wall_s_measured": run["wall_s"],
            "ratio": run["ratio"],
            "wall_s_for_nodes": run["wall_s"] * scale,
            "extrapolated": scale != 1,
            "ideal_s_for_nodes": ideal_seconds(args.nodes, 1, 1, args.latency),
            "slower_than_tuned": run["wall_s"] * scale / tuned["median_wall_s"],
        }
    summary["targets"] = {
        "ratio_under_1_3": summary["ratio"] < TARGET_RATIO,
        "at_most_10_replies": worst_replies <= TARGET_REPLIES,
        "every_node_named": summary["nodes_not_named_total"] == 0,
    }
    return summary


def report(
    tuned: dict[str, Any], naive: dict[str, Any] | None, summary: dict[str, Any], args: argparse.Namespace
) -> None:
    print(
        f"Fan-out: {args.nodes} nodes, batch_unlock latency {args.latency * 1000:.0f} ms "
        f"(other routes: none), chunk {args.chunk}, concurrency {args.concurrency}"
    )
    rows = [
        [
            f"chunk {tuned['chunk_size']}, conc {tuned['concurrency']} #{i}",
            r["nodes"],
            r["wall_s"],
            tuned["ideal_s"],
            r["ratio"],
            r["modelarts_calls"],
            r["slack_calls"],
            r["thread_replies"],
            r["nodes_not_named"],
        ]
        for i, r in enumerate(tuned["runs"], 1)
    ]
    rows.append(
        [
            "median",
            args.nodes,
            summary["wall_s"],
            summary["ideal_s"],
            summary["ratio"],
            summary["modelarts_calls"],
            summary["slack_calls"],
            summary["thread_replies_max"],
            summary["nodes_not_named_total"],
        ]
    )
    if naive is not None:
        r = naive["runs"][0]
        rows.append(
            [
                "naive: chunk 1, conc 1",
                r["nodes"],
                r["wall_s"],
                naive["ideal_s"],
                r["ratio"],
                r["modelarts_calls"],
                r["slack_calls"],
                r["thread_replies"],
                r["nodes_not_named"],
            ]
        )
    headers = ["run", "nodes", "wall s", "ideal s", "ratio", "ModelArts calls", "Slack calls", "replies", "unnamed"]
    print(table(headers, rows))
    if naive is not None:
        n = summary["naive"]
        how = "extrapolated linearly from" if n["extrapolated"] else "measured on"
        print(
            f"Naive way for {args.nodes} nodes: {n['wall_s_for_nodes']:.1f} s ({how} {n['nodes_measured']} nodes), "
            f"{n['slower_than_tuned']:.0f}× the tuned wall time; ratio to its own ideal {n['ratio']:.3f}"
        )
    for name, ok in summary["targets"].items():
        print(f"  target {name}: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
