"""`python -m bot.sandbox`: the stand-in as its own process, on the port the OS picks, with user groups."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx
import pytest

from bot.sandbox.__main__ import usergroup
from bot.sandbox.records import DEFAULT_BOT_TOKEN


def test_runs_alone_prints_its_url_and_serves_the_usergroups_it_was_given() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.sandbox", "--port", "0", "--usergroup", "S0ONCALL=U0A,U0B"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert found, line
        url = found.group(0)
        with httpx.Client(timeout=10) as http:
            for _ in range(100):  # the line is printed just before uvicorn starts serving on the bound socket
                try:
                    answer = http.post(
                        f"{url}/api/usergroups.users.list",
                        data={"usergroup": "S0ONCALL"},
                        headers={"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"},
                    )
                    break
                except httpx.ConnectError:
                    continue
            assert answer.json() == {"ok": True, "users": ["U0A", "U0B"]}
            refused = http.post(f"{url}/api/auth.test", headers={"Authorization": "Bearer xoxb-wrong"})
            assert refused.json()["error"] == "invalid_auth"
    finally:
        process.terminate()
        process.wait(10)
    assert process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down


def test_usergroup_argument() -> None:
    assert usergroup("S0X=U1, U2,") == ("S0X", ["U1", "U2"])
    assert usergroup("S0EMPTY=") == ("S0EMPTY", [])
    with pytest.raises(Exception, match="user group ID"):
        usergroup("U1=U2")
