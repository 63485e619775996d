"""`unlock-bot …`: serve, demo, simulator, check, audit, db upgrade (design.md, "The contract: CLI")."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from bot import __version__
from bot.config import Mode, Settings, SettingsError, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unlock-bot", description="Unlock Huawei Cloud ModelArts pool nodes from Slack, safely."
    )
    parser.add_argument("--version", action="version", version=f"unlock-bot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the bot (HTTP mode by default)")
    serve.add_argument("--socket-mode", action="store_true", help="connect over Socket Mode (needs SLACK_APP_TOKEN)")
    serve.add_argument("--host", default="0.0.0.0", help="HTTP listen address (default 0.0.0.0)")  # noqa: S104
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default: $PORT, else 3000)")

    demo = commands.add_parser("demo", help="play a whole conversation locally: simulator, stand-in, bot")
    demo.add_argument("--keep-running", action="store_true", help="leave the three running and say how to drive them")

    simulator = commands.add_parser("simulator", help="run the ModelArts simulator alone", add_help=False)
    simulator.add_argument("args", nargs=argparse.REMAINDER, help="see `unlock-bot simulator --help`")

    check = commands.add_parser("check", help="validate settings and policy, print them with secrets masked")
    check.add_argument("--probe", action="store_true", help="also call Slack auth.test and ModelArts list-pools")
    check.add_argument("--socket-mode", action="store_true", help="check the settings Socket Mode needs")

    audit = commands.add_parser("audit", help="export the audit trail")
    audit.add_argument("--since", type=iso_datetime, help="only events at or after this ISO time (UTC if no zone)")
    audit.add_argument("--until", type=iso_datetime, help="only events before this ISO time")
    audit.add_argument("--pool", help="only events of this pool")
    audit.add_argument("--format", choices=["json", "csv"], default="json", help="JSON lines (default) or CSV")

    db = commands.add_parser("db", help="database schema management")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply migrations up to the latest schema")
    return parser


def iso_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time, e.g. 2026-12-01T00:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulator"]:
        # argparse's REMAINDER refuses options that come first (`simulator --port 1`): hand them over untouched.
        from bot.modelarts.simulator import main as simulator_main

        return simulator_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "simulator":
            from bot.modelarts.simulator import main as simulator_main

            return simulator_main(args.args)
        if args.command == "demo":
            from bot.demo import run_demo

            return run_demo(keep_running=args.keep_running)
        settings = load_settings()
        if args.command == "serve":
            return serve(settings, socket_mode=args.socket_mode, host=args.host, port=args.port)
        if args.command == "check":
            return check(settings, probe=args.probe, mode=Mode.SOCKET if args.socket_mode else Mode.HTTP)
        if args.command == "audit":
            from bot.audit import export_audit

            return run_database_command(
                settings,
                export_audit(
                    settings, since=args.since, until=args.until, pool=args.pool, fmt=args.format, out=sys.stdout
                ),
            )
        if args.command == "db":
            return run_database_command(settings, db_upgrade(settings))
    except SettingsError as exc:
        print(f"unlock-bot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


def serve(settings: Settings, *, socket_mode: bool, host: str, port: int | None) -> int:
    from bot.logs import configure_logging
    from bot.policy import PolicyError, load_policy

    mode = Mode.SOCKET if socket_mode else Mode.HTTP
    settings.require(mode)
    try:
        load_policy(settings.unlock_bot_policy)
    except PolicyError as exc:
        print(f"unlock-bot: policy: {exc}", file=sys.stderr)
        return 2
    # Refuse an unusable database here, with one sentence, rather than as a traceback from inside the server.
    from bot.runtime import check_database

    if run_database_command(settings, check_database(settings)) != 0:
        return 1
    configure_logging(settings.unlock_bot_log_format, settings.unlock_bot_log_level, settings.secret_values())
    if socket_mode:
        from bot.socket_mode import run_socket_mode

        return run_socket_mode(settings, host=host, port=port or settings.port)
    import uvicorn

    from bot.server import create_app

    app = create_app(settings, Mode.HTTP)
    # What is loaded by now (modules, settings, policy) lives as long as the process: take it out of the cyclic
    # collector's full passes, which otherwise stall the event loop ~0.1 s each under load (BENCHMARKS.md).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )
    return 0


def check(settings: Settings, *, probe: bool, mode: Mode) -> int:
    from bot.policy import PolicyError, load_policy

    print("Settings (secrets hidden):")
    for name, value in settings.masked().items():
        print(f"  {name} = {value}")
    problems = settings.problems(mode)
    try:
        policy = load_policy(settings.unlock_bot_policy)
        print(f"Policy: {settings.unlock_bot_policy} is valid ({len(policy.pools)} pool rule(s)).")
    except PolicyError as exc:
        problems.append(f"policy: {exc}")
    if problems:
        print("Problems:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    if probe:
        return asyncio.run(run_probes(settings))
    print("OK")
    return 0


async def run_probes(settings: Settings) -> int:
    """Call Slack `auth.test` and ModelArts list-pools with the configured credentials."""
    from bot.modelarts.client import ModelArtsClient
    from bot.modelarts.errors import ModelArtsError
    from bot.slack.app import build_web_client

    failed = False
    assert settings.slack_bot_token is not None
    web = build_web_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    try:
        auth = await web.auth_test()
        print(f"Slack: auth.test OK (team {auth.get('team')}, bot user {auth.get('user_id')})")
    except Exception as exc:
        failed = True
        print(f"Slack: auth.test failed: {getattr(exc, 'response', {}).get('error', type(exc).__name__)}")
    finally:
        if web.session is not None and not web.session.closed:
            await web.session.close()
    async with ModelArtsClient.from_settings(settings) as client:
        try:
            pools = await client.list_pools()
            print(f"ModelArts: list-pools OK ({len(pools)} pool(s): {', '.join(p.name for p in pools[:10])})")
        except ModelArtsError as exc:
            failed = True
            print(f"ModelArts: list-pools failed: {exc}")
    return 1 if failed else 0


def run_database_command(settings: Settings, work: Coroutine[Any, Any, int | None]) -> int:
    """Run `work`; a database that is unreachable or not migrated is one line on stderr and exit status 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from bot.store import DatabaseUnavailable, SchemaNotMigrated

    try:
        return asyncio.run(work) or 0
    except BrokenPipeError:  # `unlock-bot audit | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (SchemaNotMigrated, DatabaseUnavailable) as exc:
        print(f"unlock-bot: {exc}", file=sys.stderr)
    except (OSError, SQLAlchemyError) as exc:
        print(f"unlock-bot: {DatabaseUnavailable(settings.resolved_database_url, exc)}", file=sys.stderr)
    return 1


async def db_upgrade(settings: Settings) -> int:
    from bot.store import Store
    from bot.store.engine import safe_url

    url = settings.resolved_database_url
    store = await Store.connect(url)
    try:
        before = await store.current_revision()
        await store.upgrade()
        after = await store.current_revision()
    finally:
        await store.close()
    if before == after:
        print(f"Database {safe_url(url)} is up to date (schema revision {after}).")
    else:
        print(f"Database {safe_url(url)} upgraded from {before or 'an empty database'} to schema revision {after}.")
    return 0
