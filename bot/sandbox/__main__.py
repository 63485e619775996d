"""`python -m bot.sandbox`: the Slack stand-in as a process of its own.

The benchmarks (and anyone staging the bot by hand) run the bot, the simulator and the stand-in as separate
processes, so that each has its own interpreter and event loop as in production; this is the stand-in's
entry point. Its `/_standin/*` endpoints are unauthenticated: keep it on loopback.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

from bot.sandbox.webapi import DEFAULT_BOT_TOKEN, SlackStandIn, create_app

DEFAULT_PORT = 8701  # next to the simulator's 8700


def usergroup(text: str) -> tuple[str, list[str]]:
    """`S0ONCALL=U0A,U0B` → ("S0ONCALL", ["U0A", "U0B"]); an empty member list is allowed (`S0EMPTY=`)."""
    group, sep, members = text.partition("=")
    if not sep or not group.startswith("S"):
        raise argparse.ArgumentTypeError(f"expected S…=U…,U… (a user group ID, '=', member IDs), got {text!r}")
    return group, [m.strip() for m in members.split(",") if m.strip()]


def build_parser(prog: str = "python -m bot.sandbox") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run the local Slack stand-in (Web API + response_url).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; keep it loopback)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port, 0 = any free one (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--usergroup",
        type=usergroup,
        action="append",
        default=[],
        metavar="S…=U…,U…",
        help="a user group and its members, for usergroups.users.list (repeatable)",
    )
    parser.add_argument("--bot-token", default=DEFAULT_BOT_TOKEN, help="the bot token it accepts (a fake one)")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn

    standin = SlackStandIn(bot_token=args.bot_token, usergroups=dict(args.usergroup))
    # Bind first, so `--port 0` can print the port the OS chose before serving on it.
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        sys.stderr.write(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}\n")
        return 2
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    sys.stdout.write(f"Slack stand-in listening on {url} (SLACK_API_URL={url}/api/)\n")
    sys.stdout.flush()
    config = uvicorn.Config(create_app(standin), log_level=args.log_level, access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
