"""`faregate webhooks …`: the signing key receivers verify with, and the delivery log.
They work on the configuration and the database directly, so they need no running server."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.api.webhooks import delivery_json
from faregate.cli.common import add_config_args, print_json, settings_from, with_engine
from faregate.config import ConfigError, Settings
from faregate.webhooks import Webhooks, WebhookSettings


def cmd_hmac_key(args: argparse.Namespace) -> int:
    """The key the server signs with. A server run by `faregate demo` keeps its admin key in
    its data directory, not in the configuration: it is read from there when nothing else
    sets one. With no secret at all the key would be one anyone can compute: refused."""
    settings = settings_from(args)
    if not (settings.secret_key or settings.admin_key):
        demo_key = Path(args.data_dir) / "admin_key"
        if demo_key.is_file():
            settings.admin_key = demo_key.read_text().strip()
    config = WebhookSettings.from_settings(settings)
    if config.public_key:
        raise ConfigError(
            "no webhooks.hmac_key, FAREGATE_SECRET_KEY or admin key is set (nor a demo's "
            f"admin key in {args.data_dir}/): deliveries would be signed with a key anyone "
            "can compute; set one of them"
        )
    print(config.hmac_key)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> list[dict[str, Any]]:
        hooks = Webhooks(engine, WebhookSettings.from_settings(settings))
        return await hooks.deliveries(status=args.status, webhook_type=args.type, limit=args.limit)

    print_json({"webhooks": [delivery_json(r) for r in with_engine(args, run)]})
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> int:
        return await Webhooks(engine, WebhookSettings.from_settings(settings)).retry(args.ids)

    print_json({"requeued": with_engine(args, run)})
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("webhooks", help="webhook signing key and delivery log")
    cmds = group.add_subparsers(dest="webhooks_command", required=True)

    p = cmds.add_parser("hmac-key", help="print the key deliveries are signed with")
    add_config_args(p)
    p.add_argument(
        "--data-dir",
        default=os.environ.get("FAREGATE_DATA_DIR", "var"),
        help="a demo's data directory, where it keeps its admin key (default: the demo's)",
    )
    p.set_defaults(func=cmd_hmac_key)

    p = cmds.add_parser("list", help="recent deliveries, newest first")
    add_config_args(p)
    p.add_argument("--status", choices=["pending", "succeeded", "failed"])
    p.add_argument("--type", help="only this webhook type, e.g. invoice.created")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_list)

    p = cmds.add_parser("retry", help="queue failed deliveries again")
    add_config_args(p)
    p.add_argument("ids", nargs="+")
    p.set_defaults(func=cmd_retry)
