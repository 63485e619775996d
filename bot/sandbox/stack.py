"""The whole product on loopback: ModelArts simulator, Slack stand-in and the bot, each on its own port.

The demo, the end-to-end tests and staging all start the same three pieces the same way; this module is
that one way. The bot runs exactly as `unlock-bot serve` does (Starlette app, HTTP mode), configured with
settings that point it at the two local services.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import ExplicitSettings, Mode, Settings
from bot.modelarts.sim_state import SimulatorState
from bot.modelarts.simulator import create_app as create_simulator_app
from bot.sandbox.driver import SlackDriver
from bot.sandbox.webapi import DEFAULT_BOT_TOKEN, SlackStandIn
from bot.sandbox.webapi import create_app as create_standin_app
from bot.server import create_app as create_bot_app
from bot.serving import RunningServer, start_server

SIMULATOR_AK = "SIMAK"
SIMULATOR_SK = "SIMSK"


@dataclass
class LocalStack:
    """The three running services and what is needed to talk to them."""

    simulator: SimulatorState
    slack: SlackStandIn
    settings: Settings
    signing_secret: str
    simulator_server: RunningServer
    slack_server: RunningServer
    bot_servers: list[RunningServer] = field(default_factory=list)

    @property
    def bot_url(self) -> str:
        return self.bot_servers[0].url

    def driver(self, bot_url: str | None = None, **kwargs: Any) -> SlackDriver:
        """A driver that sends signed Slack payloads to the bot (the first replica by default)."""
        return SlackDriver(bot_url or self.bot_url, self.signing_secret, self.slack_server.url, **kwargs)

    def start_bot(self, **overrides: Any) -> RunningServer:
        """Start one more bot replica on the same settings (and so the same database)."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        server = start_server(create_bot_app(settings, Mode.HTTP))
        self.bot_servers.append(server)
        return server

    def stop(self) -> None:
        for server in reversed(self.bot_servers):
            server.stop()
        self.slack_server.stop()
        self.simulator_server.stop()


def stack_settings(
    *,
    simulator_url: str,
    slack_url: str,
    signing_secret: str,
    policy_path: Path,
    state_dir: Path,
    database_url: str | None = None,
    **overrides: Any,
) -> Settings:
    """Settings for a bot talking to the local simulator and stand-in (fake, local-only credentials)."""
    values: dict[str, Any] = {
        "slack_bot_token": DEFAULT_BOT_TOKEN,
        "slack_signing_secret": signing_secret,
        "slack_api_url": slack_url + "/api/",
        "huaweicloud_sdk_ak": SIMULATOR_AK,
        "huaweicloud_sdk_sk": SIMULATOR_SK,
        "huaweicloud_sdk_project_id": "sim-project",
        "modelarts_endpoint": simulator_url,
        "database_url": database_url,
        "unlock_bot_state_dir": state_dir,
        "unlock_bot_policy": policy_path,
    }
    values.update(overrides)
    # Built from values, not the environment: a developer's real tokens must never leak into a local stack.
    return ExplicitSettings(**values)


def start_fakes(simulator_app: Any, slack: SlackStandIn) -> tuple[RunningServer, RunningServer]:
    """The ModelArts simulator (any ASGI app wrapping it) and the Slack stand-in, each on a free port."""
    simulator_server = start_server(simulator_app)
    try:
        slack_server = start_server(create_standin_app(slack))
    except BaseException:
        simulator_server.stop()
        raise
    return simulator_server, slack_server


def start_local_stack(
    *,
    policy_path: Path,
    state_dir: Path,
    database_url: str | None = None,
    simulator: SimulatorState | None = None,
    slack: SlackStandIn | None = None,
    usergroups: Mapping[str, list[str]] | None = None,
    replicas: int = 1,
    simulator_app: Any = None,
    signing_secret: str | None = None,
    **settings_overrides: Any,
) -> LocalStack:
    """Start simulator, stand-in and `replicas` bots on free loopback ports; `stop()` ends them all.

    `simulator_app` serves instead of the plain simulator app (a wrapper that records traffic, say);
    `signing_secret` is random unless given.
    """
    simulator = simulator or SimulatorState.default()
    slack = slack or SlackStandIn(usergroups=usergroups or {})
    signing_secret = signing_secret or secrets.token_hex(16)
    simulator_server, slack_server = start_fakes(simulator_app or create_simulator_app(simulator), slack)
    settings = stack_settings(
        simulator_url=simulator_server.url,
        slack_url=slack_server.url,
        signing_secret=signing_secret,
        policy_path=policy_path,
        state_dir=state_dir,
        database_url=database_url,
        **settings_overrides,
    )
    stack = LocalStack(
        simulator=simulator,
        slack=slack,
        settings=settings,
        signing_secret=signing_secret,
        simulator_server=simulator_server,
        slack_server=slack_server,
    )
    try:
        for _ in range(replicas):
            stack.start_bot()
    except BaseException:
        stack.stop()
        raise
    return stack
