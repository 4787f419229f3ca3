"""`python run.py`: serve the API; `python run.py keys create|list|revoke`: manage API keys.

The server binds its socket before anything else, so it listens at once (and `--port 0` picks a
free port that every handed-out URL then uses), runs on uvloop (installed here only), prints how
to reach it, and on SIGINT/SIGTERM shuts down cleanly and promptly: live sessions end with
`server_shutdown` at once (their sockets get `ended` and 4009, their recordings are finalised),
other requests get `SHUTDOWN_GRACE_S` to finish before they are cancelled, and the database is
closed; a second signal exits at once (status 128 + the signal's number), leaving what the
crash-safe writers already wrote (SPEC §10: the recording plays up to its last whole second). A
config error names the key and exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from agenthuman_local import __version__, ids, keys
from agenthuman_local.api.server import Runner
from agenthuman_local.app import create_app
from agenthuman_local.avatars import DEFAULT_AVATAR_ID, SHIPPED_AVATARS
from agenthuman_local.config import ConfigError, Settings
from agenthuman_local.config_sources import load_settings, parse_set
from agenthuman_local.errors import StorageUnavailable
from agenthuman_local.keyfiles import StartupError
from agenthuman_local.paths import DB_FILE, PRIVATE_UMASK, make_private
from agenthuman_local.store import AmbiguousKeyPrefix, Store

EXIT_CONFIG = 2
# How long open requests get to finish once the live sessions have ended, then as long again
# after they are cancelled (aiohttp's `shutdown_timeout`; its default is 60 s).
SHUTDOWN_GRACE_S = 3.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)

log = logging.getLogger(__name__)


def _config_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--config", type=Path, help="a YAML config file (over config/default.yaml)")
    flags.add_argument("--data-dir", help="where the database, key and recordings live")
    flags.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key (repeatable)",
    )
    return flags


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="AgentHuman Local: a real-time talking-avatar server."
        " `run.py keys --help` manages API keys.",
        parents=[_config_flags()],
    )
    parser.add_argument("--host", help="address to listen on")
    parser.add_argument("--port", help="port to listen on (0: any free port)")
    return parser


def _keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py keys", description="Manage API keys.")
    sub = parser.add_subparsers(dest="action", required=True)
    flags = _config_flags()
    create = sub.add_parser("create", parents=[flags], help="a new key for an account")
    create.add_argument("--account", required=True, help="account name (made if new)")
    sub.add_parser("list", parents=[flags], help="list keys by prefix")
    revoke = sub.add_parser(
        "revoke", parents=[flags], help="revoke the key with this prefix (or this whole key)"
    )
    revoke.add_argument("prefix", help="a key's prefix as `keys list` prints it, or the key")
    revoke.add_argument(
        "--all", action="store_true", help="revoke every active key the prefix matches (even '')"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for flag in ("host", "port", "data_dir"):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[flag] = value
    overrides.update(parse_set(args.set))
    return load_settings(args.config, os.environ, overrides)


def _listen(settings: Settings) -> socket.socket:
    family = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((settings.host, settings.port), family=family, backlog=128)


def _banner(app: web.Application) -> str:
    settings = app[keys.settings_key]
    first = app[keys.first_key_key]
    if first.key is None:
        key_line = (
            f"(not shown: {first.path} was removed; `python run.py keys create --account NAME`)"
        )
    else:
        key_line = f"{first.key}  (saved in {first.path})"
    avatars = ", ".join(
        a.avatar_id + (" (default)" if a.avatar_id == DEFAULT_AVATAR_ID else "")
        for a in SHIPPED_AVATARS
    )
    shown_key = first.key or "$AGENTHUMAN_API_KEY"
    return "\n".join(
        [
            f"AgentHuman Local {__version__}",
            f"  API base URL: {settings.base_url}/v1",
            f"  API key:      {key_line}",
            f"  Avatars:      {avatars}",
            f"  API docs:     {settings.base_url}/openapi.json",
            "  Try it:       curl -s -X POST "
            f"{settings.base_url}/v1/sessions -H 'x-api-key: {shown_key}'",
            "Press Ctrl-C to stop.",
        ]
    )


async def _serve(settings: Settings) -> None:
    sock = _listen(settings)
    if settings.port == 0:
        settings = dataclasses.replace(settings, port=sock.getsockname()[1])
    app = create_app(settings)
    runner = Runner(app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def first_signal(sig: signal.Signals) -> None:
        log.info("%s: shutting down (a second signal exits at once)", sig.name)
        for s in _SIGNALS:
            loop.add_signal_handler(s, second_signal, s)
        stop.set()

    for sig in _SIGNALS:
        loop.add_signal_handler(sig, first_signal, sig)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        print(_banner(app), flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        sock.close()
    log.info("shut down")


def second_signal(sig: signal.Signals) -> None:
    """Exit now, as a process killed by `sig` would; nothing waits (not even threads)."""
    log.warning("%s again: exiting at once", sig.name)
    logging.shutdown()
    os._exit(128 + sig.value)


def _fmt_time(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    make_private(settings.data_dir)
    store = await Store.open(settings.data_dir / DB_FILE)
    try:
        if args.action == "create":
            account_id = await store.ensure_account(args.account)
            key = ids.new_api_key()
            await store.add_api_key(account_id, key)
            print(key)
        elif args.action == "list":
            for k in await store.list_api_keys():
                state = f"revoked {_fmt_time(k.revoked_at)}" if k.revoked_at else "active"
                print(f"{k.prefix}  {k.account_name}  created {_fmt_time(k.created_at)}  {state}")
        else:
            if not args.prefix.strip() and not args.all:
                print("refusing an empty prefix: it matches every key (add --all)", file=sys.stderr)
                return 2
            try:
                count = await store.revoke_api_keys(args.prefix, at_most=None if args.all else 1)
            except AmbiguousKeyPrefix as exc:
                print(
                    f"refusing: {exc}; give a longer prefix or the whole key, or add --all",
                    file=sys.stderr,
                )
                return 2
            if count == 0:
                print(f"no active key starts with {args.prefix!r}", file=sys.stderr)
                return 1
            print(f"revoked {count} key(s)")
    finally:
        await store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    # Everything the process writes (database, recordings, avatars) is its user's alone,
    # whatever umask it was started under (paths.make_private tightens what is already there).
    os.umask(PRIVATE_UMASK)
    argv = list(sys.argv[1:] if argv is None else argv)
    is_keys = argv[:1] == ["keys"]
    args = (_keys_parser() if is_keys else _parser()).parse_args(argv[1:] if is_keys else argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if is_keys:
            sys.exit(asyncio.run(_keys(settings, args)))
        import uvloop

        uvloop.run(_serve(settings))
    except (OSError, StorageUnavailable, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
