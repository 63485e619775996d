"""The Dockerfile, read as text (no Docker engine here): multi-stage, slim, non-root, healthy, runs serve."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "libc6-dev", "python3-dev")


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join `\\`-continued lines; drop comments and blank lines (in a continuation too, as Docker does)."""
    lines: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current.append(stripped[:-1].strip())
            continue
        current.append(stripped)
        lines.append((start, " ".join(part for part in current if part)))
        current = []
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


def parse(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), number)
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"line {number}: {instruction.keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    return stages


def exec_form(instruction: Instruction) -> list[str]:
    """The argument list of ENTRYPOINT/CMD, in exec (JSON) or shell form."""
    if instruction.args.startswith("["):
        value = json.loads(instruction.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value
    return shlex.split(instruction.args)


def env_values(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        words = shlex.split(instruction.args)
        if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV KEY value`
            values[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            values[key] = value
    return values


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = "FROM a AS b\n# note\nRUN one \\\n    # inside\n    && two\nUSER 1\n"
    (stage,) = parse(text)
    assert (stage.base, stage.name) == ("a", "b")
    assert [(i.keyword, i.args) for i in stage.instructions] == [("RUN", "one && two"), ("USER", "1")]


def test_multi_stage_on_slim_bases(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        if stage.base in {s.name for s in stages}:
            continue  # FROM an earlier stage
        assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim(-\w+)?", stage.base), stage.base


def test_final_stage_copies_only_the_venv_from_the_builder(stages: list[Stage], final: Stage) -> None:
    builder_names = {s.name for s in stages[:-1] if s.name}
    copies = final.all("COPY")
    from_builder = [c for c in copies if "--from=" in c.args]
    assert from_builder, "the final stage copies nothing from the builder"
    for copy in from_builder:
        source = re.search(r"--from=(\S+)", copy.args)
        assert source is not None and source.group(1) in builder_names
        assert "/opt/venv" in copy.args
    assert not [c for c in copies if "--from=" not in c.args], "the final stage copies from the build context"


def test_builder_builds_a_wheel_into_a_venv(stages: list[Stage]) -> None:
    runs = " ".join(i.args for s in stages[:-1] for i in s.all("RUN"))
    assert "pip wheel --no-deps" in runs
    assert "venv /opt/venv" in runs


def test_final_stage_runs_as_non_root(final: Stage) -> None:
    user = final.last("USER")
    assert user is not None, "the final stage sets no USER, so it runs as root"
    name = user.args.split(":")[0]
    assert name not in {"root", "0"}
    if not name.isdigit():
        assert any(name in i.args for i in final.all("RUN") if "useradd" in i.args or "adduser" in i.args)
    # Nothing after USER switches back to root.
    assert final.instructions.index(user) > max((final.instructions.index(i) for i in final.all("RUN")), default=-1), (
        "RUN after USER: keep privileged setup before the USER line"
    )


def test_state_dir_is_a_volume_owned_by_the_user(final: Stage) -> None:
    env = env_values(final)
    state_dir = env.get("UNLOCK_BOT_STATE_DIR")
    assert state_dir == "/var/lib/unlock-bot"
    volumes = " ".join(v.args for v in final.all("VOLUME"))
    assert state_dir in volumes
    assert any("chown" in r.args and state_dir in r.args for r in final.all("RUN"))


def test_environment(final: Stage) -> None:
    env = env_values(final)
    assert env["UNLOCK_BOT_POLICY"] == "/etc/unlock-bot/policy.yml"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PORT"] == "3000"
    workdir = final.last("WORKDIR")
    assert workdir is not None and workdir.args == "/app"
    assert "3000" in [p.split("/")[0] for e in final.all("EXPOSE") for p in e.args.split()]


def test_healthcheck_asks_healthz_without_curl(final: Stage) -> None:
    check = final.last("HEALTHCHECK")
    assert check is not None
    assert "/healthz" in check.args
    assert "urllib" in check.args
    assert "curl" not in check.args and "wget" not in check.args  # neither exists in the slim image


def test_runs_unlock_bot_serve(final: Stage) -> None:
    entrypoint, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint is not None and cmd is not None
    assert exec_form(entrypoint) + exec_form(cmd) == ["unlock-bot", "serve"]
    assert entrypoint.args.startswith("["), "exec form, so the bot gets SIGTERM directly"


def test_final_stage_installs_no_build_tools(final: Stage) -> None:
    for run in final.all("RUN"):
        words = re.split(r"[\s;&|]+", run.args)
        installing = any(w in {"apt-get", "apt", "apk", "yum", "dnf"} for w in words) and "install" in words
        if installing:
            assert not set(words) & set(BUILD_TOOLS), f"line {run.line}: build tools in the final image"


def test_dockerignore_keeps_local_state_out() -> None:
    entries = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip()[:1] not in {"", "#"}
    }
    for needed in (".venv", ".git", "*.db", ".pytest_cache", "**/__pycache__"):
        assert needed in entries, needed
    for kept in ("bot", "pyproject.toml", "README.md"):
        assert kept not in entries, f"{kept} is needed by the build"
