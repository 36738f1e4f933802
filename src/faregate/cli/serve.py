"""Commands that run things: serve, migrate, mock-provider, and the all-in-one demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from pathlib import Path

from faregate.cli.common import add_config_args, settings_from
from faregate.config import Settings, load_settings
from faregate.store.db import is_sqlite, migrate

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "demo" / "faregate.yaml"


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_serve(args: argparse.Namespace) -> int:
    from faregate.app import serve_forever
    from faregate.logs import setup_logging

    setup_logging(args.log_level)
    settings = settings_from(args)
    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    if args.migrate or is_sqlite(settings.database_url):
        migrate(settings.database_url)
    _install_uvloop()
    asyncio.run(serve_forever(settings))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    migrate(settings.database_url, args.revision)
    print(f"database migrated to {args.revision}")
    return 0


def cmd_mock(args: argparse.Namespace) -> int:
    from faregate.mockprovider.server import run_mock

    run_mock(args.host, args.port, args.config)
    return 0


def _demo_settings(args: argparse.Namespace) -> Settings:
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("FAREGATE_DATABASE_URL", f"sqlite+aiosqlite:///{data / 'faregate.db'}")
    env.setdefault("FAREGATE_DATA_DIR", str(data))
    admin_file = data / "admin_key"
    if "FAREGATE_ADMIN_KEY" not in env:
        if not admin_file.exists():
            admin_file.write_text("fg_admin_" + secrets.token_urlsafe(24))
            admin_file.chmod(0o600)
        env["FAREGATE_ADMIN_KEY"] = admin_file.read_text().strip()
    env.setdefault("MOCK_PROVIDER_URL", f"http://127.0.0.1:{args.mock_port}")
    env.setdefault("MOCK_PROVIDER_KEY", "mock-key")
    settings = load_settings(args.config or DEMO_CONFIG, env=env)
    settings.port = args.port
    return settings


def cmd_demo(args: argparse.Namespace) -> int:
    from faregate.app import run_demo
    from faregate.logs import setup_logging

    setup_logging(args.log_level)
    settings = _demo_settings(args)
    migrate(settings.database_url)
    _install_uvloop()
    asyncio.run(run_demo(settings, mock_port=args.mock_port))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the gateway")
    add_config_args(p)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--migrate", action="store_true", help="migrate the database first")
    p.add_argument("--log-level", default=os.environ.get("FAREGATE_LOG_LEVEL", "info"))
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    add_config_args(p)
    p.add_argument("--revision", default="heads")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("mock-provider", help="run the built-in provider emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    p.add_argument("--config", help="YAML with per-deployment latency and faults")
    p.set_defaults(func=cmd_mock)

    p = sub.add_parser("demo", help="embedded SQLite + mock provider + gateway, with a demo key")
    p.add_argument("--config", help="defaults to the bundled demo configuration")
    p.add_argument("--port", type=int, default=int(os.environ.get("FAREGATE_PORT", 8080)))
    p.add_argument("--mock-port", type=int, default=9100)
    p.add_argument("--data-dir", default=os.environ.get("FAREGATE_DATA_DIR", "var"))
    p.add_argument("--log-level", default=os.environ.get("FAREGATE_LOG_LEVEL", "info"))
    p.set_defaults(func=cmd_demo)
