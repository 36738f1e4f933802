"""Wallet commands: `faregate wallets create|list|top-up|transactions|export`. They work on
the database directly; a running gateway sees new credits within a second."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.api.wallets import ledger_csv
from faregate.cli.common import add_config_args, print_json, with_engine
from faregate.config import Settings
from faregate.wallets import repository as repo
from faregate.wallets.model import credits_value
from faregate.wallets.render import transaction_json, wallet_json
from faregate.wallets.service import TopUp, WalletService


def _service(engine: AsyncEngine, settings: Settings) -> WalletService:
    return WalletService(engine, default_currency=settings.currency)


def cmd_create(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        data: dict[str, Any] = {
            "external_customer_id": args.customer,
            "rate_amount": args.rate,
            "paid_credits": args.credits,
            "granted_credits": args.granted,
            "name": args.name,
            "code": args.code,
        }
        row, made = await _service(engine, settings).create(
            {k: v for k, v in data.items() if v is not None}
        )
        rate = Decimal(row["rate_amount"])
        return {
            "wallet": wallet_json(row),
            "wallet_transactions": [transaction_json(t, rate) for t in made],
        }

    print_json(with_engine(args, run))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, _: Settings) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            return await repo.list_wallets(conn, args.customer)

    print_json({"wallets": [wallet_json(r) for r in with_engine(args, run)]})
    return 0


def _credits(text: str | None, field: str) -> Decimal:
    """A credits option read as the API reads it ("NaN", "-1" or "ten" refused by name)."""
    return credits_value({field: text}, field) or Decimal(0)


def cmd_top_up(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        service = _service(engine, settings)
        made = await service.top_up(
            args.wallet_id,
            TopUp(
                paid=_credits(args.credits, "paid_credits"),
                granted=_credits(args.granted, "granted_credits"),
                voided=_credits(args.void, "voided_credits"),
                name=args.name,
            ),
        )
        row = await service.get(args.wallet_id)
        rate = Decimal(row["rate_amount"])
        return {
            "wallet": wallet_json(row),
            "wallet_transactions": [transaction_json(t, rate) for t in made],
        }

    print_json(with_engine(args, run))
    return 0


def cmd_transactions(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        row, items, _ = await _service(engine, settings).transactions(args.wallet_id)
        rate = Decimal(row["rate_amount"])
        return {"wallet_transactions": [transaction_json(t, rate) for t in items]}

    print_json(with_engine(args, run))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> str:
        await _service(engine, settings).get(args.wallet_id)  # 404 for an unknown wallet
        async with engine.connect() as conn:
            return ledger_csv(await repo.entries_of(conn, args.wallet_id, limit=10**9))

    text = with_engine(args, run)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    wallets = sub.add_parser("wallets", help="prepaid credit wallets").add_subparsers(
        dest="action", required=True
    )
    p = wallets.add_parser("create", help="create a wallet, optionally with paid credits")
    add_config_args(p)
    p.add_argument("--customer", required=True, help="customer external_id")
    p.add_argument("--credits", help="paid credits to add at once")
    p.add_argument("--granted", help="granted (free) credits to add at once")
    p.add_argument("--rate", default="1", help="currency units per credit (default 1)")
    p.add_argument("--name")
    p.add_argument("--code")
    p.set_defaults(func=cmd_create)
    p = wallets.add_parser("list")
    add_config_args(p)
    p.add_argument("--customer")
    p.set_defaults(func=cmd_list)
    p = wallets.add_parser("top-up", help="add paid or granted credits, or void credits")
    add_config_args(p)
    p.add_argument("wallet_id")
    p.add_argument("--credits", help="paid credits")
    p.add_argument("--granted", help="granted credits")
    p.add_argument("--void", help="credits to void")
    p.add_argument("--name")
    p.set_defaults(func=cmd_top_up)
    p = wallets.add_parser("transactions", help="a wallet's transactions")
    add_config_args(p)
    p.add_argument("wallet_id")
    p.set_defaults(func=cmd_transactions)
    p = wallets.add_parser("export", help="a wallet's ledger as CSV")
    add_config_args(p)
    p.add_argument("wallet_id")
    p.add_argument("--output", "-o")
    p.set_defaults(func=cmd_export)
