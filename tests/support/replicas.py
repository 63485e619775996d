"""Several real `unlock-bot serve` processes sharing one database, for replica and crash-recovery tests.

The bots run exactly as an operator runs them — `python -m bot serve --port P` with settings in the
environment, on a database migrated by `python -m bot db upgrade` — so a SIGKILL really kills one. The
ModelArts simulator and the Slack stand-in run in this process (bot.serving), so tests read their records
directly. `CallWatch` notes when a request *starts* at the simulator (its own log records a call only when
it is answered), which is how a test catches an unlock call in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bot.modelarts.sim_state import SimulatorState
from bot.modelarts.simulator import create_app as create_simulator_app
from bot.sandbox.driver import SlackDriver
from bot.sandbox.stack import SIMULATOR_AK, SIMULATOR_SK, start_fakes
from bot.sandbox.webapi import DEFAULT_BOT_TOKEN, SlackStandIn
from bot.serving import RunningServer, free_port
from bot.store import Store
from tests.support.databases import drop_database, fresh_database, postgres_url

# Only what a Python process needs from the parent's environment: never a developer's real tokens.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "PYTHONPATH")


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for a `python -m bot …` child, plus `extra`."""
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(args: list[str], env: Mapping[str, str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """`python -m bot <args>` to completion, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class CallWatch:
    """ASGI middleware: remembers every HTTP request as it starts (method, path, monotonic time)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.started: list[tuple[str, str, float]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            with self._lock:
                self.started.append((scope["method"], scope["path"], time.monotonic()))
        await self.app(scope, receive, send)

    def count(self, path_suffix: str) -> int:
        with self._lock:
            return sum(1 for _, path, _ in self.started if path.endswith(path_suffix))


@dataclass
class Replica:
    """One `unlock-bot serve` child process."""

    index: int
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class ReplicaSet:
    """Simulator + stand-in in-process, `replicas` bot processes on one database."""

    database_url: str
    workdir: Path
    simulator: SimulatorState
    slack: SlackStandIn
    watch: CallWatch
    signing_secret: str
    env: dict[str, str]
    simulator_server: RunningServer
    slack_server: RunningServer
    replicas: list[Replica] = field(default_factory=list)

    def driver(self, index: int) -> SlackDriver:
        return SlackDriver(self.replicas[index].url, self.signing_secret, self.slack_server.url)

    def start_replica(self) -> Replica:
        index = len(self.replicas)
        port = free_port()
        log_path = self.workdir / f"replica-{index}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        replica = Replica(index=index, port=port, process=process, log_path=log_path)
        self.replicas.append(replica)
        return replica

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every live replica answers /readyz with 200; a replica that exits fails with its log."""
        deadline = time.monotonic() + timeout
        pending = [r for r in self.replicas if r.alive()]
        with httpx.Client(timeout=1.0) as http:
            while pending:
                for replica in list(pending):
                    if not replica.alive():
                        raise AssertionError(f"replica {replica.index} exited during start:\n{replica.log()[-4000:]}")
                    try:
                        if http.get(replica.url + "/readyz").status_code == 200:
                            pending.remove(replica)
                    except httpx.TransportError:
                        pass
                if time.monotonic() > deadline:
                    logs = "\n".join(r.log()[-2000:] for r in pending)
                    raise AssertionError(f"replicas not ready within {timeout}s:\n{logs}")
                time.sleep(0.05)

    def kill(self, index: int) -> None:
        """SIGKILL one replica (by its own PID) and reap it."""
        replica = self.replicas[index]
        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait(10)

    def logs(self) -> str:
        return "\n".join(f"--- replica {r.index} (pid {r.pid}) ---\n{r.log()[-6000:]}" for r in self.replicas)

    def stop(self) -> None:
        for replica in self.replicas:
            if replica.alive():
                replica.process.terminate()
        for replica in self.replicas:
            try:
                replica.process.wait(10)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(5)
        self.slack_server.stop()
        self.simulator_server.stop()


def bot_env(
    *,
    database_url: str,
    policy_path: Path,
    simulator_url: str,
    slack_url: str,
    signing_secret: str,
    state_dir: Path,
    **settings: object,
) -> dict[str, str]:
    """The environment of a `serve` child talking to the local simulator and stand-in."""
    values = {
        "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
        "SLACK_SIGNING_SECRET": signing_secret,
        "SLACK_API_URL": slack_url + "/api/",
        "HUAWEICLOUD_SDK_AK": SIMULATOR_AK,
        "HUAWEICLOUD_SDK_SK": SIMULATOR_SK,
        "HUAWEICLOUD_SDK_PROJECT_ID": "sim-project",
        "MODELARTS_ENDPOINT": simulator_url,
        "DATABASE_URL": database_url,
        "UNLOCK_BOT_POLICY": str(policy_path),
        "UNLOCK_BOT_STATE_DIR": str(state_dir),
        "UNLOCK_BOT_LOG_FORMAT": "text",
    }
    values.update({name.upper(): str(value) for name, value in settings.items()})
    return base_env(values)


def start_replicas(
    *,
    database_url: str,
    policy_path: Path,
    workdir: Path,
    replicas: int = 2,
    usergroups: Mapping[str, list[str]] | None = None,
    simulator: SimulatorState | None = None,
    migrate: bool = True,
    **settings: object,
) -> ReplicaSet:
    """Start simulator and stand-in here, migrate the database with the CLI, start `replicas` servers."""
    simulator = simulator or SimulatorState.default()
    slack = SlackStandIn(usergroups=usergroups or {})
    watch = CallWatch(create_simulator_app(simulator))
    simulator_server, slack_server = start_fakes(watch, slack)
    signing_secret = secrets.token_hex(16)
    env = bot_env(
        database_url=database_url,
        policy_path=policy_path,
        simulator_url=simulator_server.url,
        slack_url=slack_server.url,
        signing_secret=signing_secret,
        state_dir=workdir / "state",
        **settings,
    )
    fleet = ReplicaSet(
        database_url=database_url,
        workdir=workdir,
        simulator=simulator,
        slack=slack,
        watch=watch,
        signing_secret=signing_secret,
        env=env,
        simulator_server=simulator_server,
        slack_server=slack_server,
    )
    try:
        if migrate:
            upgraded = run_cli(["db", "upgrade"], env)
            assert upgraded.returncode == 0, upgraded.stderr
        for _ in range(replicas):
            fleet.start_replica()
        fleet.wait_ready()
    except BaseException:
        fleet.stop()
        raise
    return fleet


@contextlib.contextmanager
def postgres_fleet(workdir: Path, policy: str, **options: Any) -> Iterator[ReplicaSet]:
    """Replicas on a fresh database of the test PostgreSQL server, dropped again afterwards."""
    base = postgres_url()
    assert base is not None, "needs UNLOCK_BOT_TEST_POSTGRES_URL"
    policy_path = workdir / "policy.yml"
    policy_path.write_text(policy)
    url = asyncio.run(fresh_database(base))
    try:
        running = start_replicas(database_url=url, policy_path=policy_path, workdir=workdir, **options)
        try:
            yield running
        finally:
            running.stop()
    finally:
        asyncio.run(drop_database(url))


@contextlib.asynccontextmanager
async def fleet_store(fleet: ReplicaSet) -> AsyncIterator[Store]:
    """The fleet's database, opened from the test's side to check what the replicas recorded."""
    opened = await Store.connect(fleet.database_url)
    try:
        yield opened
    finally:
        await opened.close()
