"""Every setting, read from the environment (names in design.md), validated once at start.

Secrets are `SecretStr`: they print as `**********` and must be unwrapped on purpose where they are used.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SLACK_API_URL = "https://slack.com/api/"

# The official SDK's region table maps every region to modelarts.{region}.myhuaweicloud.com but one.
_ENDPOINT_EXCEPTIONS = {"ap-southeast-1": "https://modelarts.ap-southeast-1.myhuaweicloud.cn"}


class Mode(StrEnum):
    """What the process is about to do; each needs a different subset of the settings."""

    HTTP = "http"
    SOCKET = "socket"
    CHECK = "check"


class SettingsError(Exception):
    """One or more settings are missing, malformed or contradictory; the message names the variables."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


def endpoint_for_region(region: str) -> str:
    """The public ModelArts endpoint of a region, as the official SDK's table has it."""
    return _ENDPOINT_EXCEPTIONS.get(region, f"https://modelarts.{region}.myhuaweicloud.com")


def default_state_dir() -> Path:
    """Where the SQLite database lives by default: $XDG_STATE_HOME/unlock-bot or ~/.local/state/unlock-bot."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "unlock-bot"


def normalize_database_url(url: str) -> str:
    """Map plain driver-less URLs to the async drivers we ship (design.md: `sqlite:///…` is accepted)."""
    for plain, asyncified in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return asyncified + url[len(plain) :]
    return url


class Settings(BaseSettings):
    """All settings. Field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", frozen=True)

    # Slack
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL

    # ModelArts credentials and location
    huaweicloud_sdk_ak: SecretStr | None = None
    huaweicloud_sdk_sk: SecretStr | None = None
    huaweicloud_sdk_security_token: SecretStr | None = None
    huaweicloud_sdk_project_id: str | None = None
    modelarts_auth_token: SecretStr | None = None
    modelarts_region: str | None = None
    modelarts_endpoint: str | None = None

    # Storage and policy
    database_url: str | None = None
    unlock_bot_state_dir: Path = Field(default_factory=default_state_dir)
    unlock_bot_policy: Path = Path("policy.yml")
    unlock_bot_command: str = "/unlock-nodes"

    # Talking to ModelArts (design.md: at most 5 attempts per chunk within a 60 s deadline, by default)
    unlock_bot_chunk_size: int = Field(default=100, ge=1, le=1000)
    unlock_bot_concurrency: int = Field(default=4, ge=1, le=64)
    unlock_bot_max_attempts: int = Field(default=5, ge=1, le=20)
    unlock_bot_retry_deadline_seconds: float = Field(default=60.0, gt=0)
    unlock_bot_http_timeout_seconds: float = Field(default=30.0, gt=0)

    # Running
    port: int = Field(default=3000, ge=1, le=65535)
    unlock_bot_lease_seconds: float = Field(default=60.0, gt=0)
    unlock_bot_sweep_interval_seconds: float = Field(default=15.0, gt=0)
    unlock_bot_usergroup_cache_seconds: float = Field(default=60.0, ge=0)
    unlock_bot_audit_retention_days: int | None = Field(default=None, ge=1)
    unlock_bot_log_format: Literal["json", "text"] = "json"
    unlock_bot_log_level: str = "INFO"

    @field_validator("slack_api_url")
    @classmethod
    def _api_url_ends_with_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value if value.endswith("/") else value + "/"

    @field_validator("modelarts_endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("unlock_bot_command")
    @classmethod
    def _command_has_slash(cls, value: str) -> str:
        if not value.startswith("/") or " " in value:
            raise ValueError("must look like /unlock-nodes")
        return value

    # -- derived values ---------------------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{self.unlock_bot_state_dir / 'unlock-bot.db'}"

    @property
    def resolved_modelarts_endpoint(self) -> str | None:
        if self.modelarts_endpoint:
            return self.modelarts_endpoint
        if self.modelarts_region:
            return endpoint_for_region(self.modelarts_region)
        return None

    def problems(self, mode: Mode) -> list[str]:
        """Everything missing or contradictory for `mode`, each naming the variable to set."""
        found: list[str] = []
        has_aksk = self.huaweicloud_sdk_ak is not None or self.huaweicloud_sdk_sk is not None
        if has_aksk and self.modelarts_auth_token is not None:
            found.append(
                "HUAWEICLOUD_SDK_AK/HUAWEICLOUD_SDK_SK and MODELARTS_AUTH_TOKEN are both set: choose one way "
                "to authenticate to ModelArts"
            )
        elif has_aksk and (self.huaweicloud_sdk_ak is None or self.huaweicloud_sdk_sk is None):
            missing = "HUAWEICLOUD_SDK_SK" if self.huaweicloud_sdk_sk is None else "HUAWEICLOUD_SDK_AK"
            found.append(f"{missing} is not set (AK/SK signing needs both HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK)")
        elif not has_aksk and self.modelarts_auth_token is None:
            found.append(
                "ModelArts credentials are not set: set HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK, "
                "or MODELARTS_AUTH_TOKEN"
            )
        if self.huaweicloud_sdk_security_token is not None and not has_aksk:
            found.append("HUAWEICLOUD_SDK_SECURITY_TOKEN is set without HUAWEICLOUD_SDK_AK/HUAWEICLOUD_SDK_SK")
        if not self.huaweicloud_sdk_project_id:
            found.append("HUAWEICLOUD_SDK_PROJECT_ID is not set (the ModelArts project ID)")
        if self.resolved_modelarts_endpoint is None:
            found.append("neither MODELARTS_REGION nor MODELARTS_ENDPOINT is set")
        if self.slack_bot_token is None:
            found.append("SLACK_BOT_TOKEN is not set (the bot token, xoxb-…)")
        elif not self.slack_bot_token.get_secret_value().startswith("xoxb-"):
            found.append("SLACK_BOT_TOKEN does not look like a bot token (it should start with xoxb-)")
        if mode is Mode.HTTP and self.slack_signing_secret is None:
            found.append("SLACK_SIGNING_SECRET is not set (HTTP mode verifies every request with it)")
        if mode is Mode.SOCKET:
            if self.slack_app_token is None:
                found.append("SLACK_APP_TOKEN is not set (Socket Mode needs the app-level token, xapp-…)")
            elif not self.slack_app_token.get_secret_value().startswith("xapp-"):
                found.append("SLACK_APP_TOKEN does not look like an app-level token (it should start with xapp-)")
        return found

    def require(self, mode: Mode) -> Settings:
        """Raise `SettingsError` listing every problem for `mode`; return self when there is none."""
        found = self.problems(mode)
        if found:
            raise SettingsError(found)
        return self

    def secret_values(self) -> list[str]:
        """Every secret's plain value, for scrubbing logs; never print this."""
        values = [v.get_secret_value() for v in vars(self).values() if isinstance(v, SecretStr)]
        password = _url_password(self.resolved_database_url)
        return [v for v in [*values, password] if v]

    def masked(self) -> dict[str, str]:
        """Every setting by its environment name, secrets shown only as set or not set."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value: Any = getattr(self, name)
            if isinstance(value, SecretStr):
                text = "<set, hidden>"
            elif value is None:
                text = "<not set>"
            elif name == "database_url":
                text = _mask_url_password(str(value))
            else:
                text = str(value)
            shown[name.upper()] = text
        shown["(derived) DATABASE_URL"] = _mask_url_password(self.resolved_database_url)
        shown["(derived) MODELARTS_ENDPOINT"] = self.resolved_modelarts_endpoint or "<not set>"
        return shown


def _url_password(url: str) -> str | None:
    _, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    creds = rest.rpartition("@")[0]
    return creds.split(":", 1)[1] if ":" in creds else None


def _mask_url_password(url: str) -> str:
    """Hide a password in a database URL (`postgresql://user:pw@host/db`)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, turning pydantic's errors into one message per variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError(problems) from None


class ExplicitSettings(Settings):
    """Settings from the given values only, never the environment (local stacks, tests, the demo)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, *args: Any, **kwargs: Any) -> Any:
        return (init_settings,)
