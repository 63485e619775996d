"""`unlock-bot demo` as a first-time user runs it: a subprocess, no credentials, nothing written outside tmp."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import httpx
import pytest

import bot.demo
from bot.demo import run_demo

TIMEOUT = 120


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh machine: no Slack/Huawei Cloud/bot settings, HOME and temp inside tmp."""
    prefixes = ("SLACK_", "HUAWEICLOUD_", "MODELARTS_", "UNLOCK_BOT_", "UNLOCK_DEMO_", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    for name in ("home", "state", "tmp"):
        (tmp_path / name).mkdir()
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        TMPDIR=str(tmp_path / "tmp"),
        PYTHONIOENCODING="utf-8",
    )
    return env


def test_demo_plays_the_whole_conversation(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "bot", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=TIMEOUT,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, f"stdout:\n{out}\nstderr:\n{result.stderr}"
    assert result.stderr == ""  # the bot's logs go to a file, not into the transcript
    assert time.monotonic() - started < 60

    steps = re.findall(r"^== Step (\d) of 8: ", out, flags=re.MULTILINE)
    assert steps == [str(i) for i in range(1, 9)]
    # the refused caller, told privately, by name
    assert "> @dave types in #incidents:  /unlock-nodes pool-prod-a" in out
    assert "only visible to @dave:" in out and "You are not a requester for pool pool-prod-a" in out
    # the request with its reason and live preview, waiting for approval
    assert '--reason "INC-4711: training job stuck"' in out
    assert "INC-4711: training job stuck" in out and "3 🔓 will be unlocked" in out
    assert "[Approve] [Deny] [Cancel]" in out
    # the self-approval refused under the two-person rule
    assert "only visible to @alice:" in out and "two-person rule" in out
    # the approval, and every node's result in the thread
    assert "🟢 *Succeeded* (approved by @bob): 3 unlocked, 0 failed, 0 unknown" in out
    assert "*Unlocked* (3)" in out
    # the partial failure: the failed nodes named, the retry offered, then retried and succeeded
    assert "🟠 *Partially failed* (approved by @bob): 2 unlocked, 2 failed, 0 unknown" in out
    failed = re.search(r"\*Failed\* \(2\)(?:.*\n)+?\s+`(os-node-[\w-]+)`, `(os-node-[\w-]+)`", out)
    assert failed, out
    assert "[Retry failed nodes]" in out and "*Retry of*" in out
    assert f"`{failed.group(1)}`, `{failed.group(2)}`" in out.split("== Step 8 of 8")[1]
    assert "🟢 *Succeeded* (approved by @bob): 2 unlocked, 0 failed, 0 unknown" in out
    assert "Done: all 7 nodes are unlocked" in out
    # no raw Slack markup left for the reader
    assert "<@U0" not in out and "<!date" not in out and ":no_entry:" not in out

    assert list((tmp_path / "home").iterdir()) == []
    assert list((tmp_path / "state").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []  # its temporary directory is removed at the end


class Lines:
    """A subprocess's stdout, read in a thread so the test can wait for a line with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, needle: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not printed; output so far:\n{''.join(self.seen)}")
            self.seen.append(line)
            if needle in line:
                return "".join(self.seen)


def test_keep_running_can_be_driven_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "demo", "--keep-running"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        lines = Lines(proc)
        out = lines.until("Watching #incidents")
        assert "How to drive them" in out and "signing secret" in out
        health = re.search(r"health: (http://127\.0\.0\.1:\d+/healthz)", out)
        assert health, out
        response = httpx.get(health.group(1), timeout=10)
        assert response.status_code == 200 and response.json() == {"status": "ok"}

        # The printed `export …` and `python -m bot.demo` lines work, and the answer shows up live.
        exports = re.search(r"export (.+)", out)
        assert exports, out
        drive_env = dict(env, **dict(pair.split("=", 1) for pair in exports.group(1).split()))
        node = re.search(r"-m bot\.demo say alice \"pool-prod-a ([\w-]+) --dry-run\"", out)
        assert node, out
        said = subprocess.run(
            [sys.executable, "-m", "bot.demo", "say", "alice", f"pool-prod-a {node.group(1)} --dry-run"],
            cwd=tmp_path,
            env=drive_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert said.returncode == 0, said.stderr
        lines.until("only visible to @alice", timeout=30)
        assert "Dry run" in lines.until(f"1 will be unlocked: `{node.group(1)}`", timeout=30)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        lines.until("Stopping the bot, the stand-in and the simulator.", timeout=5)
        assert proc.stderr is not None
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.TransportError):
        httpx.get(health.group(1), timeout=2)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_step_that_does_not_happen_fails_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # @alice is not a requester under this policy, so her request never reaches the channel.
    monkeypatch.setattr(bot.demo, "POLICY", bot.demo.POLICY.replace("{usergroups: [S0ONCALL]}", "{users: [U0BOB]}  "))
    monkeypatch.setattr(bot.demo, "STEP_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    assert run_demo(keep_running=False) == 1

    err = capsys.readouterr().err
    assert "unlock-bot demo failed at step 2 (@alice (on call) asks to unlock 3 nodes)" in err
    assert "an approval request in the channel did not happen within 1 s" in err
    kept = re.search(r"Everything it wrote is kept in (\S+)", err)
    assert kept and Path(kept.group(1)).parent == tmp_path
    assert (Path(kept.group(1)) / "bot.log").is_file()
