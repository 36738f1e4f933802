"""`faregate webhooks …`: the signing key receivers verify with, and the delivery log.
They work on the configuration and the database directly, so they need no running server."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.api.webhooks import delivery_json
from faregate.cli.common import add_config_args, print_json, settings_from, with_engine
from faregate.config import Settings
from faregate.webhooks import Webhooks, WebhookSettings


def cmd_hmac_key(args: argparse.Namespace) -> int:
    print(WebhookSettings.from_settings(settings_from(args)).hmac_key)
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
