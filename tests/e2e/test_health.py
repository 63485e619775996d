"""Probes: `/healthz` answers while the process does; `/readyz` only while settings and database are usable."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.config import Mode
from bot.sandbox.stack import LocalStack, start_local_stack
from bot.server import READY_TIMEOUT_SECONDS, create_app, readiness
from bot.serving import free_port, start_server
from bot.store import Store
from bot.store.schema import head_revision
from tests.e2e.conftest import USERGROUPS
from tests.e2e.helpers import wait_until


async def probe(stack: LocalStack, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=READY_TIMEOUT_SECONDS + 5) as client:
        return await client.get(stack.bot_url + path)


async def test_ready_when_database_and_settings_are_usable(stack: LocalStack) -> None:
    health = await probe(stack, "/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await probe(stack, "/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


async def test_not_ready_when_the_schema_is_not_what_the_code_expects(stack: LocalStack, store: Store) -> None:
    """Someone rolled the database back (or never migrated it): this replica must get no traffic."""
    head = head_revision()
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'rolled_back'"))
    try:
        ready = await probe(stack, "/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "unavailable"
        assert "rolled_back" in body["database"] and "unlock-bot db upgrade" in body["database"]
        assert (await probe(stack, "/healthz")).status_code == 200  # alive: restarting it would not help
    finally:
        async with store.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
    assert (await probe(stack, "/readyz")).status_code == 200


async def test_readiness_checks_the_settings_of_the_mode_served(stack: LocalStack, store: Store) -> None:
    """The same settings are fine for HTTP mode and unusable for Socket Mode (no app-level token)."""
    assert await readiness(stack.settings, store, Mode.HTTP, head_revision()) == {}
    problems = await readiness(stack.settings, store, Mode.SOCKET, head_revision())
    assert list(problems) == ["settings"] and "SLACK_APP_TOKEN" in problems["settings"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn's SystemExit
def test_unusable_settings_never_serve(stack: LocalStack) -> None:
    """Settings are checked before anything listens: no replica with half a configuration ever gets ready."""
    broken = stack.settings.model_copy(update={"slack_signing_secret": None})
    with pytest.raises(RuntimeError, match="exited during start-up"):
        start_server(create_app(broken, Mode.HTTP))


class TcpProxy:
    """A loopback TCP forwarder that can be cut and restored: a database server going away and coming back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and break every open one, like a stopped server."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.mark.postgres
async def test_not_ready_while_postgres_is_down(database_url: str, policy_path: Path, tmp_path: Path) -> None:
    """PostgreSQL stops under a running replica: /readyz says so within its timeout, and recovers with it."""
    if database_url.startswith("sqlite"):
        pytest.skip("needs a database server to stop")
    url = make_url(database_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    stack = start_local_stack(
        policy_path=policy_path, state_dir=tmp_path / "state", database_url=proxied, usergroups=USERGROUPS
    )
    try:
        assert (await probe(stack, "/readyz")).status_code == 200
        proxy.stop()
        started = time.monotonic()
        ready = await probe(stack, "/readyz")
        assert ready.status_code == 503 and "database" in ready.json()
        assert time.monotonic() - started < READY_TIMEOUT_SECONDS + 2
        assert (await probe(stack, "/healthz")).status_code == 200
        proxy.start()

        async def ready_again() -> bool:
            return (await probe(stack, "/readyz")).status_code == 200

        await wait_until(ready_again, timeout=15, interval=0.2)
    finally:
        stack.stop()
        proxy.stop()
