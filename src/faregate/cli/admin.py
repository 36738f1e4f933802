"""Tenancy commands: `faregate customers …`, `faregate teams …`, `faregate keys …`.
They work on the database directly, so they need no running server."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.api.admin import customer_json, customer_values, key_json
from faregate.auth import repository
from faregate.auth.service import KeyService
from faregate.cli.common import add_config_args, print_json, with_engine
from faregate.config import Settings
from faregate.errors import Conflict, InvalidRequest


def cmd_customer_create(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        fields = {"external_id": args.external_id, "name": args.name, "email": args.email}
        if args.currency is not None:
            fields["currency"] = args.currency
        values = customer_values(fields, settings.currency)  # as POST /admin/customers checks
        async with engine.begin() as conn:
            if await repository.customer_by_external_id(conn, args.external_id):
                raise Conflict(f"customer {args.external_id!r} already exists")
            return await repository.insert_customer(conn, values)

    print_json({"customer": customer_json(with_engine(args, run))})
    return 0


def cmd_customer_list(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, _: Settings) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            return await repository.list_customers(conn, limit=10_000)

    print_json({"customers": [customer_json(r) for r in with_engine(args, run)]})
    return 0


def _expiry(text: str) -> datetime:
    try:
        expires = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest("--expires-at must be an ISO 8601 timestamp.") from None
    return expires if expires.tzinfo else expires.replace(tzinfo=UTC)


def _key_settings(text: str) -> dict[str, Any]:
    try:
        settings = json.loads(text)
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        raise InvalidRequest('--settings must be a JSON object, e.g. \'{"limits": {"rpm": 60}}\'.')
    return settings


def cmd_key_create(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> tuple[str, dict[str, Any]]:
        service = KeyService(engine, settings.admin_key)
        return await service.create_key(
            name=args.name,
            customer_external_id=args.customer,
            team=args.team,
            external_subscription_id=args.subscription,
            allowed_models=args.models.split(",") if args.models else None,
            tags=args.tags.split(",") if args.tags else None,
            settings=_key_settings(args.settings) if args.settings else None,
            expires_at=_expiry(args.expires_at) if args.expires_at else None,
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


def _key_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The fields `keys update` was given (PATCH /admin/keys/{id}'s)."""
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = args.name
    if args.any_model:
        changes["allowed_models"] = None
    elif args.models is not None:
        changes["allowed_models"] = args.models.split(",")
    if args.tags is not None:
        changes["tags"] = args.tags.split(",") if args.tags else []
    if args.settings is not None:
        changes["settings"] = _key_settings(args.settings)
    if args.no_expiry:
        changes["expires_at"] = None
    elif args.expires_at is not None:
        changes["expires_at"] = _expiry(args.expires_at)
    if args.subscription is not None:
        changes["external_subscription_id"] = args.subscription or None
    return changes


def cmd_key_update(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        return await KeyService(engine, settings.admin_key).update_key(
            args.key_id, _key_changes(args)
        )

    print_json({"api_key": key_json(with_engine(args, run))})
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
    p.add_argument("--settings", help='JSON object, e.g. \'{"limits": {"rpm": 60}}\'')
    p.set_defaults(func=cmd_key_create)
    p = keys.add_parser("update", help="change a key's name, models, tags, settings, expiry")
    add_config_args(p)
    p.add_argument("key_id")
    p.add_argument("--name")
    models = p.add_mutually_exclusive_group()
    models.add_argument("--models", help="comma-separated allowed models (replaces the list)")
    models.add_argument("--any-model", action="store_true", help="allow every model")
    p.add_argument("--tags", help="comma-separated tags (replaces them; '' for none)")
    p.add_argument("--settings", help="JSON object (replaces the settings)")
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--expires-at", help="ISO 8601 timestamp")
    expiry.add_argument("--no-expiry", action="store_true", help="never expires")
    p.add_argument("--subscription", help="external_subscription_id ('' for the customer's)")
    p.set_defaults(func=cmd_key_update)
    p = keys.add_parser("list")
    add_config_args(p)
    p.add_argument("--customer")
    p.set_defaults(func=cmd_key_list)
    p = keys.add_parser("revoke")
    add_config_args(p)
    p.add_argument("key_id")
    p.set_defaults(func=cmd_key_revoke)
