"""Tenancy commands: `faregate customers …`, `faregate teams …`, `faregate keys …`.
They work on the database directly, so they need no running server."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.api.admin import customer_json, key_json
from faregate.auth import repository
from faregate.auth.service import KeyService
from faregate.cli.common import add_config_args, print_json, with_engine
from faregate.config import Settings
from faregate.errors import Conflict


def cmd_customer_create(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        async with engine.begin() as conn:
            if await repository.customer_by_external_id(conn, args.external_id):
                raise Conflict(f"customer {args.external_id!r} already exists")
            return await repository.insert_customer(
                conn,
                {
                    "external_id": args.external_id,
                    "name": args.name,
                    "email": args.email,
                    "currency": (args.currency or settings.currency).upper(),
                },
            )

    print_json({"customer": customer_json(with_engine(args, run))})
    return 0


def cmd_customer_list(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, _: Settings) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            return await repository.list_customers(conn, limit=10_000)

    print_json({"customers": [customer_json(r) for r in with_engine(args, run)]})
    return 0


def cmd_key_create(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> tuple[str, dict[str, Any]]:
        service = KeyService(engine, settings.admin_key)
        expires = datetime.fromisoformat(args.expires_at) if args.expires_at else None
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return await service.create_key(
            name=args.name,
            customer_external_id=args.customer,
            team=args.team,
            external_subscription_id=args.subscription,
            allowed_models=args.models.split(",") if args.models else None,
            tags=args.tags.split(",") if args.tags else None,
            expires_at=expires,
        )

    key, row = with_engine(args, run)
    print_json(
        {
            "key": key,
            "api_key": key_json(row),
            "note": "The key is shown once; only its hash is stored.",
        }
    )
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, _: Settings) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            customer_id = None
            if args.customer:
                customer = await repository.customer_by_external_id(conn, args.customer)
                customer_id = customer["id"] if customer else "-"
            return await repository.list_keys(conn, customer_id)

    print_json({"api_keys": [key_json(r) for r in with_engine(args, run)]})
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> None:
        await KeyService(engine, settings.admin_key).revoke(args.key_id)

    with_engine(args, run)
    print_json({"revoked": args.key_id})
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    customers = sub.add_parser("customers", help="manage customers").add_subparsers(
        dest="action", required=True
    )
    p = customers.add_parser("create")
    add_config_args(p)
    p.add_argument("external_id")
    p.add_argument("--name")
    p.add_argument("--email")
    p.add_argument("--currency")
    p.set_defaults(func=cmd_customer_create)
    p = customers.add_parser("list")
    add_config_args(p)
    p.set_defaults(func=cmd_customer_list)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    p = keys.add_parser("create")
    add_config_args(p)
    p.add_argument("--name")
    p.add_argument("--customer", help="customer external_id")
    p.add_argument("--team")
    p.add_argument("--subscription", help="external_subscription_id this key bills to")
    p.add_argument("--models", help="comma-separated allowed models")
    p.add_argument("--tags", help="comma-separated tags added to every request")
    p.add_argument("--expires-at", help="ISO 8601 timestamp")
    p.set_defaults(func=cmd_key_create)
    p = keys.add_parser("list")
    add_config_args(p)
    p.add_argument("--customer")
    p.set_defaults(func=cmd_key_list)
    p = keys.add_parser("revoke")
    add_config_args(p)
    p.add_argument("key_id")
    p.set_defaults(func=cmd_key_revoke)
