"""Run the three benchmarks one after the other, each in its own process, and print their summaries.

    python bench/run_all.py [--quick]

Each benchmark prints its own table and writes bench/results/<name>.json; the same command lines can be run
alone (see BENCHMARKS.md). `--quick` shrinks them (fewer rounds and runs) for a smoke test, not for figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
FULL = {
    "ack_latency": ["--rounds", "5"],
    "fanout": ["--runs", "5", "--naive-nodes", "200"],
    "memory": ["--bursts", "3"],
}
QUICK = {
    "ack_latency": ["--rounds", "1", "--commands", "200"],
    "fanout": ["--runs", "1", "--naive-nodes", "20"],
    "memory": ["--bursts", "2", "--commands", "200"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: fewer rounds and runs")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    failed = []
    for name, extra in plan.items():
        argv = [sys.executable, str(BENCH_DIR / f"{name}.py"), *extra]
        print(f"\n=== {name}: python bench/{name}.py {' '.join(extra)}", flush=True)
        began = time.monotonic()
        if subprocess.run(argv, check=False).returncode != 0:
            failed.append(name)
        print(f"=== {name} took {time.monotonic() - began:.0f} s", flush=True)
    print("\n=== Targets")
    for name in plan:
        path = BENCH_DIR / "results" / f"{name}.json"
        if name in failed or not path.exists():
            print(f"  {name}: FAILED (see its output above)")
            continue
        for target, ok in json.loads(path.read_text())["summary"]["targets"].items():
            print(f"  {name}: {target}: {'met' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
