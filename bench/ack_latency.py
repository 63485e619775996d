"""Ack latency under a burst: N signed slash commands, C in flight, against `unlock-bot serve` and a bare endpoint.

    python bench/ack_latency.py [--commands 500] [--concurrency 50] [--rounds 5]

Each round sends the burst to the bot, waits until the bot has finished the work the commands started after
their acks (previews, requests stored, approval messages and ephemeral replies posted), then sends the same
burst to the bare endpoint (`bench/bare_endpoint.py`: verify the signature, answer 200). Latency is measured in
this process from just before the request is written until its response is read. Figures per round, and the
median over rounds, go to the screen and to bench/results/ack_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from common import (
    BURST_POOL,
    CHANNEL,
    Slack,
    Stack,
    command_line,
    machine,
    median,
    percentile,
    running_stack,
    table,
    write_result,
)

TARGET_P99_MS = 250.0
TARGET_P50_RATIO = 3.0

# The mix of one burst (shares of the commands): what an incident channel sends at once.
MIX = {
    "request": 0.6,  # a valid request: policy check, ModelArts preview, stored, approval message posted
    "dry_run": 0.2,  # --dry-run: policy check and preview, answered privately
    "help": 0.1,  # help: the caller's permissions, answered privately
    "malformed": 0.1,  # an unknown flag: refused in the ack itself, no work after it
}
MIX_TEXT = {
    "request": '`pool-burst <1-3 locked nodes> --reason "INC-n: burst"`',
    "dry_run": "`pool-burst <1-3 nodes> --dry-run`",
    "help": "`help`",
    "malformed": "`pool-burst <node> --frobnicate` (unknown flag)",
}


@dataclass
class Burst:
    """Ack latencies (ms) and errors of one burst."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    started_at: float = 0.0  # wall clock, comparable with the stand-in's timestamps
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "sent": len(lat) + sum(self.errors.values()),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat, default=float("nan")),
            "mean_ms": sum(lat) / len(lat) if lat else float("nan"),
            "seconds": self.seconds,
            "per_second": len(lat) / self.seconds if self.seconds else float("nan"),
        }


def parse_mix(text: str) -> dict[str, float]:
    """`request=0.6,help=0.4` → shares (normalised to sum 1); kinds are MIX's keys."""
    shares: dict[str, float] = {}
    for part in text.split(","):
        kind, _, share = part.partition("=")
        if kind.strip() not in MIX:
            raise argparse.ArgumentTypeError(f"unknown kind {kind!r}; kinds are {', '.join(MIX)}")
        shares[kind.strip()] = float(share or 1)
    total = sum(shares.values())
    return {kind: share / total for kind, share in shares.items()}


def command_texts(count: int, nodes: list[str], rng: random.Random, mix: dict[str, float]) -> list[tuple[str, str]]:
    """(kind, text) for one burst, in the proportions of `mix`, shuffled."""
    kinds: list[str] = []
    for kind, share in mix.items():
        kinds += [kind] * round(count * share)
    kinds = (kinds + [max(mix, key=lambda k: mix[k])] * count)[:count]
    rng.shuffle(kinds)
    out = []
    for i, kind in enumerate(kinds):
        picked = " ".join(rng.sample(nodes, rng.randint(1, 3)))
        if kind == "request":
            out.append((kind, f'{BURST_POOL} {picked} --reason "INC-{i}: burst"'))
        elif kind == "dry_run":
            out.append((kind, f"{BURST_POOL} {picked} --dry-run"))
        elif kind == "help":
            out.append((kind, "help"))
        else:
            out.append((kind, f"{BURST_POOL} {picked.split()[0]} --frobnicate"))
    return out


async def send_burst(slack: Slack, http: aiohttp.ClientSession, url: str, texts: list[str], concurrency: int) -> Burst:
    """POST every command, `concurrency` in flight; each is signed just before it is sent.

    aiohttp, not httpx, sends the load: httpx's connection pool tops out near 200 requests/s with 50 in flight
    on this machine (p99 over 1 s against the bare endpoint), which would measure the client, not the server.
    """
    bodies = [slack.command_body(text) for text in texts]
    result = Burst(started_at=time.time())
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < len(bodies):
            body = bodies[position]
            position += 1
            headers = slack.headers(body)
            started = time.perf_counter()
            try:
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.errors[type(exc).__name__] += 1
                continue
            elapsed = (time.perf_counter() - started) * 1000
            if status == 200:
                result.latencies_ms.append(elapsed)
            else:
                result.errors[f"HTTP {status}"] += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - began
    return result


async def wait_for_followups(slack: Slack, before: int, expected: int, since: float, within: float) -> dict[str, Any]:
    """Wait until the bot has answered every command that starts work after its ack (at most `within` s)."""
    deadline = time.monotonic() + within
    responses: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        responses = (await slack.standin("responses"))["responses"][before:]
        if len(responses) >= expected:
            break
        await asyncio.sleep(0.5)
    failed = [r for r in responses if r.get("status") != 200 or ":boom:" in str((r.get("body") or {}).get("text", ""))]
    last = max((float(r["at"]) for r in responses), default=since)
    return {
        "expected": expected,
        "answered": len(responses),
        "failed": len(failed),
        "seconds_after_burst_start": last - since,
    }


async def run_rounds(
    stack: Stack,
    bot_url: str,
    baselines: dict[str, str],
    *,
    commands: int,
    concurrency: int,
    rounds: int,
    mix: dict[str, float] = MIX,
    seed: int = 1,
    after_round: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """`rounds` times: the burst to each baseline, then to the bot, then wait for the bot's follow-up work.

    The baselines (name → URL) go first while the bot is idle; each round ends with the bot idle again.
    """
    out = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30.0)
    async with (
        httpx.AsyncClient(timeout=30.0) as admin,
        aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
    ):
        slack = Slack(stack, admin)
        try:
            pools = await slack.sim("GET", "pools")
            nodes = [n["name"] for p in pools["pools"] if p["name"] == BURST_POOL for n in p["nodes"] if n["locked"]]
            rng = random.Random(seed)  # a reproducible command mix
            await warm_up(slack, http, bot_url, baselines, nodes, rng)
            for number in range(1, rounds + 1):
                burst = command_texts(commands, nodes, rng, mix)
                texts = [text for _, text in burst]
                kinds = Counter(kind for kind, _ in burst)
                row: dict[str, Any] = {"round": number, "mix": dict(kinds)}
                for name, url in baselines.items():
                    row[name] = (await send_burst(slack, http, f"{url}/slack/events", texts, concurrency)).summary()
                    await asyncio.sleep(0.5)
                before = len((await slack.standin("responses"))["responses"])
                bot = await send_burst(slack, http, f"{bot_url}/slack/events", texts, concurrency)
                row["bot"] = bot.summary()
                row["followups"] = await wait_for_followups(
                    slack, before, commands - kinds["malformed"], bot.started_at, within=180.0
                )
                if "bare" in row:
                    row["ratio_p50"] = row["bot"]["p50_ms"] / row["bare"]["p50_ms"]
                    row["ratio_p99"] = row["bot"]["p99_ms"] / row["bare"]["p99_ms"]
                if "bare" in row and "bolt" in row:
                    row["bolt_ratio_p50"] = row["bolt"]["p50_ms"] / row["bare"]["p50_ms"]
                    row["bolt_ratio_p99"] = row["bolt"]["p99_ms"] / row["bare"]["p99_ms"]
                out.append(row)
                await asyncio.sleep(1.0)
                if after_round is not None:
                    after_round(row)
        finally:
            await slack.aclose()
    return out


async def warm_up(
    slack: Slack,
    http: aiohttp.ClientSession,
    bot_url: str,
    baselines: dict[str, str],
    nodes: list[str],
    rng: random.Random,
) -> None:
    """A few commands first, so one-off start-up costs (imports, first connections) are not in round 1."""
    mix = command_texts(20, nodes, rng, MIX)
    texts = [text for _, text in mix]
    for url in baselines.values():
        await send_burst(slack, http, f"{url}/slack/events", texts, 5)
    before = len((await slack.standin("responses"))["responses"])
    burst = await send_burst(slack, http, f"{bot_url}/slack/events", texts, 5)
    expected = sum(1 for kind, _ in mix if kind != "malformed")
    await wait_for_followups(slack, before, expected, burst.started_at, within=60.0)


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds (error counts are totals)."""

    def med(*path: str) -> float:
        values = []
        for row in rounds:
            value: Any = row
            for key in path:
                value = value[key]
            values.append(float(value))
        return median(values)

    summary: dict[str, Any] = {}
    for target in ("bare", "bolt", "bot"):
        if all(target in r for r in rounds):
            for stat in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "per_second"):
                summary[f"{target}_{stat}"] = med(target, stat)
            summary[f"{target}_errors_total"] = sum(r[target]["errors"] for r in rounds)
    summary.update(
        followups_failed_total=sum(r["followups"]["failed"] for r in rounds),
        followups_missing_total=sum(r["followups"]["expected"] - r["followups"]["answered"] for r in rounds),
        followups_done_s=med("followups", "seconds_after_burst_start"),
    )
    for key in ("ratio_p50", "ratio_p99", "bolt_ratio_p50", "bolt_ratio_p99"):
        if all(key in r for r in rounds):
            summary[key] = med(key)
    summary["targets"] = {
        "p99_under_250ms": summary["bot_p99_ms"] < TARGET_P99_MS,
        "no_errors": summary["bot_errors_total"] == 0,
        "p50_ratio_under_3": summary.get("ratio_p50", float("inf")) < TARGET_P50_RATIO,
    }
    return summary


def report(rounds: list[dict[str, Any]], summary: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"Ack latency: {args.commands} signed slash commands, {args.concurrency} in flight, {args.rounds} rounds")
    print("Mix per burst: " + ", ".join(f"{share:.0%} {MIX_TEXT[kind]}" for kind, share in args.mix.items()))
    headers = ["round", "target", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "acks/s"]
    headers += ["p50 / bare", "p99 / bare"]
    rows: list[list[Any]] = []
    for r in [*rounds, None]:
        label = "median" if r is None else r["round"]
        for target in ("bare", "bolt", "bot"):
            prefix = {"bot": "", "bolt": "bolt_", "bare": "-"}[target]
            if r is None:
                if f"{target}_p50_ms" not in summary:
                    continue
                stats = {k: summary[f"{target}_{k}"] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "per_second")}
                stats["errors"] = summary[f"{target}_errors_total"]
                ratios = [summary.get(f"{prefix}ratio_p50", ""), summary.get(f"{prefix}ratio_p99", "")]
            else:
                if target not in r:
                    continue
                stats = r[target]
                ratios = [r.get(f"{prefix}ratio_p50", ""), r.get(f"{prefix}ratio_p99", "")]
            rows.append(
                [
                    label,
                    target,
                    stats["p50_ms"],
                    stats["p95_ms"],
                    stats["p99_ms"],
                    stats["max_ms"],
                    stats["errors"],
                    stats["per_second"],
                    *ratios,
                ]
            )
    print(table(headers, rows))
    print(
        "bare = signature check only; bolt = a Bolt app that only acks; bot = `unlock-bot serve`. Median rows: "
        "medians over rounds (ratios: medians of the per-round ratios), errors summed over rounds."
    )
    print(
        f"Bot follow-up work (previews, requests, approval messages, replies): done "
        f"{summary['followups_done_s']:.1f} s after the burst started (median); "
        f"{summary['followups_failed_total']} failed, {summary['followups_missing_total']} missing"
    )
    for name, ok in summary["targets"].items():
        print(f"  target {name}: {'met' if ok else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--mix",
        type=parse_mix,
        default=MIX,
        metavar="KIND=SHARE,…",
        help=f"command mix (default {','.join(f'{k}={v}' for k, v in MIX.items())})",
    )
    parser.add_argument("--no-bolt", action="store_true", help="skip the Bolt-only baseline")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="sample the bot with py-spy into FILE")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs in the temporary directory")
    args = parser.parse_args()
    info = machine()
    with running_stack(keep_logs=args.keep_logs) as stack:
        bot, bot_url = stack.start_bot()
        baselines = {"bare": stack.start_baseline("bare")[1]}
        if not args.no_bolt:
            baselines["bolt"] = stack.start_baseline("bolt")[1]
        profiler = stack.start_profiler(bot, args.profile) if args.profile else None
        rounds = asyncio.run(
            run_rounds(
                stack,
                bot_url,
                baselines,
                commands=args.commands,
                concurrency=args.concurrency,
                rounds=args.rounds,
                mix=args.mix,
            )
        )
        if profiler is not None:
            stack.stop_profiler(profiler)
            print(f"py-spy profile of the bot (collapsed stacks): {args.profile}")
    summary = summarise(rounds)
    report(rounds, summary, args)
    path = write_result(
        "ack_latency",
        {
            "benchmark": "ack_latency",
            "command": command_line(),
            "machine": info,
            "config": {
                "commands": args.commands,
                "concurrency": args.concurrency,
                "rounds": args.rounds,
                "mix": args.mix,
                "mix_text": {kind: MIX_TEXT[kind] for kind in args.mix},
                "channel": CHANNEL,
                "database": "sqlite",
                "client": "aiohttp, one connection per request in flight",
            },
            "summary": summary,
            "rounds": rounds,
        },
    )
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
