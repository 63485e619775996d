"""Run ASGI apps on loopback ports in a background thread.

The demo, the tests and the benchmarks all need the simulator, the Slack stand-in or the bot listening on a
real port while the caller goes on; this is the one place that knows how to start and stop uvicorn that way.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    """A uvicorn server running in a thread; `url` has no trailing slash."""

    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_server(
    app: Any, host: str = "127.0.0.1", port: int | None = None, *, startup_timeout: float = 15.0
) -> RunningServer:
    """Start `app` on `host:port` (a free port when None) and return once it accepts connections."""
    port = port or free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="auto", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"server on {host}:{port} exited during start-up")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"server on {host}:{port} did not start within {startup_timeout}s")
        time.sleep(0.01)
    return RunningServer(server=server, thread=thread, host=host, port=port)


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int | None = None) -> Iterator[RunningServer]:
    """Context-managed `start_server`: the server stops when the block ends."""
    running = start_server(app, host, port)
    try:
        yield running
    finally:
        running.stop()
