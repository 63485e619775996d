"""A local Slack for tests, the demo and staging: Web API stand-in, a driver that plays users, a renderer.

No environment this project runs in can reach slack.com; these three pieces stand in for it end to end.
"""

from bot.sandbox.driver import VERIFICATION_TOKEN, SlackDriver
from bot.sandbox.render import render_channel, render_message, render_view
from bot.sandbox.webapi import (
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    DEFAULT_BOT_TOKEN,
    TEAM_ID,
    Ack,
    Edit,
    Ephemeral,
    Message,
    OpenedView,
    RecordedCall,
    ResponsePost,
    SlackStandIn,
    create_app,
)

__all__ = [
    "APP_ID",
    "BOT_ID",
    "BOT_USER_ID",
    "DEFAULT_BOT_TOKEN",
    "TEAM_ID",
    "VERIFICATION_TOKEN",
    "Ack",
    "Edit",
    "Ephemeral",
    "Message",
    "OpenedView",
    "RecordedCall",
    "ResponsePost",
    "SlackDriver",
    "SlackStandIn",
    "create_app",
    "render_channel",
    "render_message",
    "render_view",
]
