"""Billing commands: `faregate invoices list|show|finalize|refresh|run|download` and
`faregate usage --customer X`. They work on the database directly; webhooks they cause are
queued in the outbox and delivered by a running server."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.auth import repository as customers_repo
from faregate.billing import invoice_repository as irepo
from faregate.billing import repository as repo
from faregate.billing.errors import BillingNotFound
from faregate.billing.invoicing import Invoicing, InvoicingSettings
from faregate.billing.lago_invoice import invoice_number, stored_invoice
from faregate.billing.render import render_html, render_pdf
from faregate.billing.usage_report import current_usage_json
from faregate.cli.common import add_config_args, print_json, with_engine
from faregate.config import Settings
from faregate.wallets.credits import WalletCredits
from faregate.webhooks import Webhooks, WebhookSettings


def _invoicing(engine: AsyncEngine, settings: Settings) -> Invoicing:
    """The server's invoicing: a finalized invoice applies the customer's wallet credits
    (and refunds what its subscription consumed above it) unless wallets are disabled."""
    hooks = Webhooks(engine, WebhookSettings.from_settings(settings))
    invoicing = Invoicing(
        engine, InvoicingSettings.from_section(settings.section("billing")), webhooks=hooks
    )
    if settings.section("wallets").get("enabled", True) is not False:
        invoicing.credits = WalletCredits()
    return invoicing


def cmd_list(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            rows, _ = await irepo.list_invoices(
                conn,
                external_customer_id=args.customer,
                external_subscription_id=args.subscription,
                status=args.status,
                limit=10_000,
            )
        invoicing = _invoicing(engine, settings)
        return [await invoicing.invoice_json(row) for row in rows]

    print_json({"invoices": with_engine(args, run)})
    return 0


def _one(action: str) -> Any:
    def command(args: argparse.Namespace) -> int:
        async def run(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
            invoicing = _invoicing(engine, settings)
            if action == "finalize":
                row = await invoicing.finalize(args.invoice_id)
            elif action == "refresh":
                row = await invoicing.refresh(args.invoice_id)
            else:
                async with engine.connect() as conn:
                    found = await irepo.invoice_by_id(conn, args.invoice_id)
                if found is None:
                    raise BillingNotFound("invoice", args.invoice_id)
                row = found
            return await invoicing.invoice_json(row)

        print_json({"invoice": with_engine(args, run)})
        return 0

    return command


def cmd_run(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        result = await _invoicing(engine, settings).run()
        return dataclasses.asdict(result)

    print_json({"billing_run": with_engine(args, run)})
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, _: Settings) -> tuple[dict[str, Any], Any]:
        async with engine.connect() as conn:
            row = await irepo.invoice_by_id(conn, args.invoice_id)
            if row is None:
                raise BillingNotFound("invoice", args.invoice_id)
            customer = await customers_repo.customer_by_id(conn, row["customer_id"] or "")
        return row, customer or {"external_id": row["external_customer_id"]}

    row, customer = with_engine(args, run)
    invoice = stored_invoice(row)
    path = Path(args.output or f"{row.get('number') or row['id']}.{args.format}")
    if args.format == "html":
        path.write_text(render_html(invoice, customer, number=invoice_number(row)))
    else:
        path.write_bytes(render_pdf(invoice, customer, number=invoice_number(row)))
    print_json({"invoice": row["id"], "file": str(path)})
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    """Current usage (period to date) of the customer's subscription, per charge and filter:
    what GET /api/v1/customers/{external_id}/current_usage answers (one code path)."""

    async def run(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        tax_rate = InvoicingSettings.from_section(settings.section("billing")).tax_rate
        async with engine.connect() as conn:
            external_id = args.subscription
            if external_id is None:
                customer = await customers_repo.customer_by_external_id(conn, args.customer)
                if customer is None:
                    raise BillingNotFound("customer", args.customer)
                active = await repo.active_subscription_of_customer(conn, customer["id"])
                if active is None:
                    raise BillingNotFound("subscription", f"active of {args.customer}")
                external_id = active["external_id"]
            body = await current_usage_json(
                conn, args.customer, external_id, now=datetime.now(UTC), tax_rate=tax_rate
            )
        return {"external_subscription_id": external_id, **body}

    print_json({"customer_usage": with_engine(args, run)})
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    invoices = sub.add_parser("invoices", help="list, show, finalize and download invoices")
    actions = invoices.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list")
    add_config_args(p)
    p.add_argument("--customer", help="customer external_id")
    p.add_argument("--subscription", help="external_subscription_id")
    p.add_argument("--status", choices=("draft", "finalized"))
    p.set_defaults(func=cmd_list)
    for action, text in (
        ("show", "show one invoice"),
        ("finalize", "finalize a draft (numbered, then immutable)"),
        ("refresh", "recompute a draft from the events stored now"),
    ):
        p = actions.add_parser(action, help=text)
        add_config_args(p)
        p.add_argument("invoice_id")
        p.set_defaults(func=_one(action))
    p = actions.add_parser("run", help="invoice every ended billing period now")
    add_config_args(p)
    p.set_defaults(func=cmd_run)
    p = actions.add_parser("download", help="write the invoice as PDF or HTML")
    add_config_args(p)
    p.add_argument("invoice_id")
    p.add_argument("--format", choices=("pdf", "html"), default="pdf")
    p.add_argument("--output", "-o", help="file to write (default: <number>.<format>)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("usage", help="a customer's current usage (period to date)")
    add_config_args(p)
    p.add_argument("--customer", required=True, help="customer external_id")
    p.add_argument("--subscription", help="external_subscription_id (default: the active one)")
    p.set_defaults(func=cmd_usage)
