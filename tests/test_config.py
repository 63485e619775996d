"""Settings: environment names from design.md, derived endpoint and database URL, clear problems, no leaks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import (
    ExplicitSettings,
    Mode,
    SettingsError,
    endpoint_for_region,
    load_settings,
    normalize_database_url,
)

REPO = Path(__file__).resolve().parents[1]
COMPLETE = {
    "SLACK_BOT_TOKEN": "xoxb-abc-123",
    "SLACK_SIGNING_SECRET": "signing-secret-value",
    "HUAWEICLOUD_SDK_AK": "AKVALUE",
    "HUAWEICLOUD_SDK_SK": "sk-value-very-secret",
    "HUAWEICLOUD_SDK_PROJECT_ID": "proj123",
    "MODELARTS_REGION": "cn-north-4",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [*COMPLETE, "SLACK_APP_TOKEN", "MODELARTS_AUTH_TOKEN", "MODELARTS_ENDPOINT", "DATABASE_URL"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_reads_design_environment_names(env: pytest.MonkeyPatch) -> None:
    for name, value in COMPLETE.items():
        env.setenv(name, value)
    env.setenv("UNLOCK_BOT_COMMAND", "/unlock-staging")
    settings = load_settings()
    assert settings.problems(Mode.HTTP) == []
    assert settings.huaweicloud_sdk_project_id == "proj123"
    assert settings.unlock_bot_command == "/unlock-staging"
    assert settings.resolved_modelarts_endpoint == "https://modelarts.cn-north-4.myhuaweicloud.com"


@pytest.mark.parametrize(
    ("region", "endpoint"),
    [
        ("cn-north-4", "https://modelarts.cn-north-4.myhuaweicloud.com"),
        ("ap-southeast-1", "https://modelarts.ap-southeast-1.myhuaweicloud.cn"),
        ("ap-southeast-3", "https://modelarts.ap-southeast-3.myhuaweicloud.com"),
    ],
)
def test_region_endpoints_follow_the_sdk_table(region: str, endpoint: str) -> None:
    assert endpoint_for_region(region) == endpoint


def test_endpoint_override_wins() -> None:
    settings = ExplicitSettings(modelarts_region="cn-north-4", modelarts_endpoint="http://127.0.0.1:8700/")
    assert settings.resolved_modelarts_endpoint == "http://127.0.0.1:8700"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////var/lib/unlock-bot/x.db", "sqlite+aiosqlite:////var/lib/unlock-bot/x.db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_database_urls_map_to_async_drivers(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


def test_default_database_is_sqlite_in_state_dir(tmp_path: object) -> None:
    settings = ExplicitSettings(unlock_bot_state_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path}/unlock-bot.db"


def test_problems_name_the_variables() -> None:
    problems = "\n".join(ExplicitSettings().problems(Mode.HTTP))
    for name in ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_PROJECT_ID", "MODELARTS_REGION", "SLACK_BOT_TOKEN"):
        assert name in problems
    assert "SLACK_SIGNING_SECRET" in problems
    assert "SLACK_APP_TOKEN" in "\n".join(ExplicitSettings().problems(Mode.SOCKET))


def test_contradictory_credentials_are_refused() -> None:
    settings = ExplicitSettings(huaweicloud_sdk_ak="a", huaweicloud_sdk_sk="b", modelarts_auth_token="t")
    assert any("choose one" in p for p in settings.problems(Mode.CHECK))
    half = ExplicitSettings(huaweicloud_sdk_ak="a")
    assert any("HUAWEICLOUD_SDK_SK is not set" in p for p in half.problems(Mode.CHECK))
    with pytest.raises(SettingsError, match="HUAWEICLOUD_SDK_SK"):
        half.require(Mode.CHECK)


def test_malformed_value_names_the_variable(env: pytest.MonkeyPatch) -> None:
    env.setenv("UNLOCK_BOT_CHUNK_SIZE", "lots")
    with pytest.raises(SettingsError, match="UNLOCK_BOT_CHUNK_SIZE"):
        load_settings()


def test_masked_hides_every_secret() -> None:
    settings = ExplicitSettings(
        **{k.lower(): v for k, v in COMPLETE.items()},
        database_url="postgresql://bot:db-password-1@db/unlock",
    )
    shown = "\n".join(f"{k}={v}" for k, v in settings.masked().items())
    for secret in ("xoxb-abc-123", "signing-secret-value", "AKVALUE", "sk-value-very-secret", "db-password-1"):
        assert secret not in shown
        assert secret in settings.secret_values()
    assert "proj123" in shown
    assert "sk-value-very-secret" not in repr(settings)


def test_check_command_prints_masked_settings_and_problems(tmp_path: object) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        **COMPLETE,
        "UNLOCK_BOT_POLICY": str(REPO / "policy.example.yml"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "check"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "HUAWEICLOUD_SDK_SK = <set, hidden>" in done.stdout
    assert "sk-value-very-secret" not in done.stdout + done.stderr
    env.pop("HUAWEICLOUD_SDK_PROJECT_ID")
    done = subprocess.run(
        [sys.executable, "-m", "bot", "check"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "HUAWEICLOUD_SDK_PROJECT_ID is not set" in done.stderr
