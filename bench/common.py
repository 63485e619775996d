"""What every benchmark shares: the processes under test, signed Slack traffic, statistics and reporting.

Each benchmark runs the product the way it is deployed, one process per part, all on loopback: the ModelArts
simulator (`unlock-bot simulator`), the Slack stand-in (`python -m bot.sandbox`) and the bot (`unlock-bot
serve`, HTTP mode, SQLite). The benchmark process only sends what Slack would send and reads the stand-in's
and the simulator's records, so nothing of the bot runs in it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.sandbox.driver import VERIFICATION_TOKEN, SlackDriver
from bot.sandbox.records import DEFAULT_BOT_TOKEN, TEAM_DOMAIN, TEAM_ID, ResponseContext, mint_response_token
from bot.sandbox.records import mint_trigger_id as _mint_trigger_id
from bot.slack import ids

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LOOPBACK = "127.0.0.1"

REQUESTER = "U0BENCHREQ"
APPROVER = "U0BENCHAPPR"
CHANNEL = "C0BENCH"
ONCALL = "S0BENCHONCALL"
BURST_POOL = "pool-burst"
FANOUT_POOL = "pool-fanout"
NAIVE_POOL = "pool-naive"

SIMULATOR_AK, SIMULATOR_SK, SIMULATOR_PROJECT = "SIMAK", "SIMSK", "sim-project"

POLICY = f"""
requesters: {{usergroups: [{ONCALL}]}}
approvers: {{users: [{APPROVER}]}}
channels: [{CHANNEL}]
approval:
  two_person: true
  ttl_seconds: 3600
limits:
  max_nodes_per_request: 2000
"""


def seed_yaml(fanout_nodes: int, naive_nodes: int) -> str:
    """A simulator seed: a small pool for command bursts and all-locked pools for the fan-outs."""
    return f"""
project_id: {SIMULATOR_PROJECT}
region: cn-north-4
credentials: {{{SIMULATOR_AK}: {SIMULATOR_SK}}}
lockout_after: 0
faults: {{}}
pools:
  - {{name: {BURST_POOL}, node_count: 64, locked_count: 48}}
  - {{name: {FANOUT_POOL}, node_count: {fanout_nodes}, locked_count: {fanout_nodes}}}
  - {{name: {NAIVE_POOL}, node_count: {naive_nodes}, locked_count: {naive_nodes}}}
"""


# ----- machine and reporting ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (Markdown-compatible)."""
    cells = [[str(h) for h in headers], *[[fmt(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def write_result(name: str, data: Mapping[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def command_line() -> str:
    """How this benchmark was started, relative to the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), BENCH_DIR.parent)
    return " ".join(["python", script, *sys.argv[1:]])


# ----- processes ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak (VmHWM) of a process, in MiB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def unlock_bot_argv() -> list[str]:
    """The `unlock-bot` console script next to this interpreter, else `python -m bot` (the same CLI)."""
    script = Path(sys.executable).parent / "unlock-bot"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot"]


class Process:
    """A child process whose output goes to a log file; stopped by its own pid only."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(self.argv, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._log.close()


def wait_http(url: str, process: Process, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200; fail early, with the log, if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited during start-up:\n{process.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{process.name} not ready at {url} after {timeout}s:\n{process.log_tail()}")


def minimal_env(**extra: str) -> dict[str, str]:
    """A clean environment: a developer's real Slack or cloud credentials never reach the processes."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    env.update(extra)
    return env


@dataclass
class Stack:
    """Simulator, stand-in, and any number of bot / bare-endpoint processes started on free loopback ports."""

    workdir: Path
    signing_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    processes: list[Process] = field(default_factory=list)
    simulator_url: str = ""
    standin_url: str = ""

    @property
    def policy_path(self) -> Path:
        return self.workdir / "policy.yml"

    def start_services(self, *, fanout_nodes: int = 2000, naive_nodes: int = 200) -> None:
        self.policy_path.write_text(POLICY)
        seed = self.workdir / "seed.yml"
        seed.write_text(seed_yaml(fanout_nodes, naive_nodes))
        port = free_port()
        sim = self._spawn(
            "simulator",
            [*unlock_bot_argv(), "simulator", "--host", LOOPBACK, "--port", str(port), "--seed", str(seed)],
            minimal_env(),
        )
        self.simulator_url = f"http://{LOOPBACK}:{port}"
        port = free_port()
        standin = self._spawn(
            "standin",
            [
                sys.executable,
                "-m",
                "bot.sandbox",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--usergroup",
                f"{ONCALL}={REQUESTER}",
            ],
            minimal_env(),
        )
        self.standin_url = f"http://{LOOPBACK}:{port}"
        wait_http(f"{self.simulator_url}/_sim/faults", sim)
        wait_http(f"{self.standin_url}/_standin/healthz", standin)

    def bot_env(self, **overrides: str) -> dict[str, str]:
        (self.workdir / "state").mkdir(exist_ok=True)
        return minimal_env(
            HOME=str(self.workdir),
            SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN,
            SLACK_SIGNING_SECRET=self.signing_secret,
            SLACK_API_URL=f"{self.standin_url}/api/",
            HUAWEICLOUD_SDK_AK=SIMULATOR_AK,
            HUAWEICLOUD_SDK_SK=SIMULATOR_SK,
            HUAWEICLOUD_SDK_PROJECT_ID=SIMULATOR_PROJECT,
            MODELARTS_ENDPOINT=self.simulator_url,
            DATABASE_URL=f"sqlite:///{self.workdir / 'bench.db'}",
            UNLOCK_BOT_POLICY=str(self.policy_path),
            UNLOCK_BOT_STATE_DIR=str(self.workdir / "state"),
            UNLOCK_BOT_LOG_FORMAT="json",
            **overrides,
        )

    def start_bot(self, name: str = "bot", **env_overrides: str) -> tuple[Process, str]:
        """`unlock-bot serve` as deployed (JSON logs at INFO to a file); returns it and its base URL."""
        port = free_port()
        bot = self._spawn(
            name, [*unlock_bot_argv(), "serve", "--host", LOOPBACK, "--port", str(port)], self.bot_env(**env_overrides)
        )
        url = f"http://{LOOPBACK}:{port}"
        wait_http(f"{url}/readyz", bot, timeout=60.0)
        return bot, url

    def start_baseline(self, name: str) -> tuple[Process, str]:
        """`bench/<name>_endpoint.py` (`bare`: signature check only; `bolt`: Bolt acking) in its own process."""
        port = free_port()
        process = self._spawn(
            name,
            [sys.executable, str(BENCH_DIR / f"{name}_endpoint.py"), "--host", LOOPBACK, "--port", str(port)],
            minimal_env(SLACK_SIGNING_SECRET=self.signing_secret),
        )
        url = f"http://{LOOPBACK}:{port}"
        wait_http(f"{url}/healthz", process)
        return process, url

    def start_profiler(self, target: Process, output: Path) -> Process:
        """py-spy sampling `target` (collapsed stacks, with idle frames) until `stop_profiler`."""
        py_spy = Path(sys.executable).parent / "py-spy"
        argv = [str(py_spy), "record", "--pid", str(target.pid), "--format", "raw", "--idle", "--rate", "200"]
        return self._spawn(f"py-spy-{target.name}", [*argv, "--output", str(output)], minimal_env())

    def stop_profiler(self, profiler: Process) -> None:
        profiler.stop(timeout=30.0, sig=signal.SIGINT)  # py-spy writes its output on SIGINT
        self.processes.remove(profiler)

    def _spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Process:
        process = Process(name, argv, env, self.workdir)
        self.processes.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        self.processes.remove(process)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


@contextlib.contextmanager
def running_stack(keep_logs: bool = False, **services: int) -> Iterator[Stack]:
    """A started simulator and stand-in in a temporary directory; every process is stopped on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="unlock-bot-bench-"))
    stack = Stack(workdir)
    try:
        stack.start_services(**services)
        yield stack
    finally:
        stack.stop_all()
        if keep_logs:
            print(f"(process logs kept in {workdir})", file=sys.stderr)
        else:
            for path in sorted(workdir.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            workdir.rmdir()


# ----- Slack traffic -----------------------------------------------------------------------------------------


class TimedDriver(SlackDriver):
    """A `SlackDriver` that notes when it last put a request on the wire (after reading what it needed)."""

    sent_at: float = 0.0

    async def send_raw(self, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        self.sent_at = time.time()
        return await super().send_raw(body, headers)


class Slack:
    """Builds and signs what Slack sends (via `SlackDriver`), and reads the stand-in's records."""

    def __init__(self, stack: Stack, http: httpx.AsyncClient) -> None:
        self.stack = stack
        self.http = http
        self.driver = TimedDriver(
            f"http://{LOOPBACK}:1/slack/events", stack.signing_secret, stack.standin_url, report_acks=False
        )

    async def aclose(self) -> None:
        await self.driver.aclose()

    def command_body(self, text: str, *, user: str = REQUESTER, channel: str = CHANNEL) -> bytes:
        """A `/unlock-nodes` slash command, form-encoded with Slack's fields (as `SlackDriver.command`)."""
        context = ResponseContext(TEAM_ID, channel, user, None, False, int(time.time()))
        fields = {
            "token": VERIFICATION_TOKEN,
            "team_id": TEAM_ID,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel,
            "channel_name": channel.lower(),
            "user_id": user,
            "user_name": user.lower(),
            "command": "/unlock-nodes",
            "text": text,
            "api_app_id": "A0SANDBOX",
            "is_enterprise_install": "false",
            "response_url": f"{self.stack.standin_url}/response/{mint_response_token(context)}",
            "trigger_id": _mint_trigger_id(user, time.time()),
        }
        return urlencode(fields).encode()

    def headers(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/x-www-form-urlencoded", **self.driver.sign(body)}

    async def standin(self, path: str, **params: str) -> dict[str, Any]:
        response = await self.http.get(f"{self.stack.standin_url}/_standin/{path}", params=params, timeout=30.0)
        response.raise_for_status()
        return dict(response.json())

    async def sim(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = await self.http.request(method, f"{self.stack.simulator_url}/_sim/{path}", json=body, timeout=30.0)
        response.raise_for_status()
        return dict(response.json())


def approve_value(message: Mapping[str, Any]) -> str | None:
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("action_id") == ids.APPROVE_ACTION:
                return str(element["value"])
    return None


def all_text(message: Mapping[str, Any]) -> str:
    """Every string inside a message (text and blocks), for "is this node named" checks."""
    return str(message.get("text", "")) + "\n" + json.dumps(message.get("blocks") or [])


RESULT_PAGE = re.compile(r"Results for (?P<id>\S+?)(?: \((?P<page>\d+)/(?P<pages>\d+)\))?:")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def endpoint_app(events: Callable[[Request], Awaitable[Response]]) -> Starlette:
    """A comparison endpoint: `events` on `/slack/events`, and the `/healthz` the harness waits on."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/slack/events", events, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    )


def serve_endpoint(create_app: Callable[[str], Starlette], description: str) -> None:
    """Run a comparison endpoint in this process with the uvicorn options `unlock-bot serve` uses (bot/cli.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(os.environ["SLACK_SIGNING_SECRET"])
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, proxy_headers=True)
