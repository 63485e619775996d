"""Memory: resident size of `unlock-bot serve` idle, after each of three bursts, and after a 2,000-node fan-out.

    python bench/memory.py [--bursts 3] [--commands 500] [--concurrency 50] [--nodes 2000]

Reads VmRSS (resident now) and VmHWM (the peak so far) from /proc/<pid>/status of the bot process. "Idle" is
read once the bot answers /readyz and has sat still for a few seconds; every later reading waits until the
bot has finished the work it was given (every command answered, the fan-out's results posted) and settled.
The bursts and the fan-out are the same as in bench/ack_latency.py and bench/fanout.py.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from ack_latency import run_rounds
from common import FANOUT_POOL, command_line, machine, rss_mb, running_stack, table, write_result
from fanout import one_run

TARGET_IDLE_MB = 150.0
TARGET_GROWTH = 0.10
SETTLE_SECONDS = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    info = machine()
    readings: list[dict[str, Any]] = []
    with running_stack(keep_logs=args.keep_logs, fanout_nodes=args.nodes) as stack:
        bot, url = stack.start_bot()

        def read(label: str) -> None:
            time.sleep(SETTLE_SECONDS)
            readings.append({"when": label, **rss_mb(bot.pid)})

        read("idle (started, ready)")
        asyncio.run(
            run_rounds(
                stack,
                url,
                {},
                commands=args.commands,
                concurrency=args.concurrency,
                rounds=args.bursts,
                after_round=lambda row: read(f"after burst {row['round']}"),
            )
        )
        asyncio.run(one_run(stack, url, FANOUT_POOL, args.nodes, args.latency, within=300.0))
        read(f"after the {args.nodes:,}-node fan-out")
    summary = summarise(readings, args)
    rows = [[r["when"], r["VmRSS"], r["VmHWM"]] for r in readings]
    print(f"Memory of `unlock-bot serve` (SQLite, one process): {args.bursts} bursts of {args.commands} commands")
    print(table(["when", "RSS MiB", "peak RSS MiB"], rows))
    print(
        f"Growth from burst 1 to burst {args.bursts}: {summary['growth_over_bursts']:+.1%}; "
        f"after the fan-out: {summary['after_fanout_mb']:.1f} MiB"
    )
    for name, ok in summary["targets"].items():
        print(f"  target {name}: {'met' if ok else 'MISSED'}")
    path = write_result(
        "memory",
        {
            "benchmark": "memory",
            "command": command_line(),
            "machine": info,
            "config": {
                "bursts": args.bursts,
                "commands": args.commands,
                "concurrency": args.concurrency,
                "fanout_nodes": args.nodes,
                "settle_seconds": SETTLE_SECONDS,
                "database": "sqlite",
            },
            "summary": summary,
            "readings": readings,
        },
    )
    print(f"Wrote {path}")


def summarise(readings: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    idle = readings[0]["VmRSS"]
    bursts = [r["VmRSS"] for r in readings[1 : 1 + args.bursts]]
    growth = (bursts[-1] - bursts[0]) / bursts[0]
    return {
        "idle_mb": idle,
        "after_bursts_mb": bursts,
        "growth_over_bursts": growth,
        "after_fanout_mb": readings[-1]["VmRSS"],
        "peak_mb": max(r["VmHWM"] for r in readings),
        "targets": {
            "idle_under_150_mb": idle < TARGET_IDLE_MB,
            "growth_over_bursts_under_10_percent": growth < TARGET_GROWTH,
        },
    }


if __name__ == "__main__":
    main()
