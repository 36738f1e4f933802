"""Lago v1 wallets API (wallets, also under their customer by code, and wallet transactions)
plus the wallet's ledger as JSON or CSV. HTTP only: parse, call the wallet service, render."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from aiohttp import web

from faregate.api.billing import _lago, _root, page_meta, page_of, query_int
from faregate.api.common import json_response, read_json_object
from faregate.api.state import SERVICES
from faregate.auth import repository as customers_repo
from faregate.billing import lago_json
from faregate.billing.errors import BillingNotFound, BillingValidationError
from faregate.money import decimal_str, from_nanos
from faregate.wallets import repository as repo
from faregate.wallets.model import (
    UNSUPPORTED_TRANSACTION_FIELDS,
    credits_value,
    iso_utc,
    refuse_unsupported,
    refuse_unsupported_wallet_fields,
)
from faregate.wallets.render import transaction_json, wallet_json
from faregate.wallets.service import TopUp, WalletService

LEDGER_COLUMNS = (
    "id",
    "created_at",
    "kind",
    "key",
    "hold_id",
    "transaction_id",
    "available",
    "held",
    "consumed",
    "funding",
    "reserved",
)


CSV_BATCH = 5000  # entries read per query while streaming the CSV export


def _wallets(request: web.Request) -> WalletService:
    services = request.app[SERVICES]
    runtime = services.wallets
    if runtime is not None:
        return runtime.service  # type: ignore[no-any-return]
    return WalletService(services.engine, default_currency=services.settings.currency)


async def _fresh(request: web.Request) -> None:
    """Flush this process's pending ledger entries so balances include them."""
    runtime = request.app[SERVICES].wallets
    if runtime is not None:
        await runtime.flush()


def _forget(request: web.Request, row: dict[str, Any]) -> None:
    runtime = request.app[SERVICES].wallets
    if runtime is not None:
        runtime.forget(row["external_customer_id"])


async def _create(request: web.Request, external_customer_id: str | None = None) -> web.Response:
    """A wallet from the body; under a customer's path, of that customer whatever the body
    says."""
    data = {
        k: v for k, v in _root(await read_json_object(request), "wallet").items() if v is not None
    }
    refuse_unsupported_wallet_fields(data)
    if external_customer_id is not None:
        data["external_customer_id"] = external_customer_id
    row, _ = await _wallets(request).create(data)
    _forget(request, row)
    return json_response({"wallet": wallet_json(row)})


@_lago
async def create_wallet(request: web.Request) -> web.Response:
    return await _create(request)


@_lago
async def get_wallet(request: web.Request) -> web.Response:
    await _fresh(request)
    row = await _wallets(request).get(request.match_info["id"])
    return json_response({"wallet": wallet_json(row)})


@_lago
async def list_wallets(request: web.Request) -> web.Response:
    await _fresh(request)
    page, per_page = page_of(request)
    rows, total = await _wallets(request).find_all(
        request.query.get("external_customer_id"), page=page, per_page=per_page
    )
    return json_response(
        {"wallets": [wallet_json(r) for r in rows], "meta": page_meta(page, per_page, total)}
    )


@_lago
async def update_wallet(request: web.Request) -> web.Response:
    data = _root(await read_json_object(request), "wallet")
    refuse_unsupported_wallet_fields(data)
    row = await _wallets(request).update(request.match_info["id"], data)
    _forget(request, row)
    return json_response({"wallet": wallet_json(row)})


@_lago
async def terminate_wallet(request: web.Request) -> web.Response:
    row = await _wallets(request).terminate(request.match_info["id"])
    _forget(request, row)
    return json_response({"wallet": wallet_json(row)})


# --- a customer's wallets by code (Lago's /customers/{external_customer_id}/wallets) ---------


async def _customer_id(request: web.Request) -> str:
    external_id = request.match_info["external_id"]
    async with request.app[SERVICES].engine.connect() as conn:
        customer = await customers_repo.customer_by_external_id(conn, external_id)
    if customer is None:
        raise BillingNotFound("customer", external_id)
    return str(customer["id"])


async def _wallet_by_code(request: web.Request) -> dict[str, Any]:
    """The customer's wallet with this code: its active one, else its latest terminated."""
    customer_id = await _customer_id(request)
    code = request.match_info["code"]
    async with request.app[SERVICES].engine.connect() as conn:
        row = await repo.wallet_by_code(conn, customer_id, code)
    if row is None:
        raise BillingNotFound("wallet", code)
    return row


@_lago
async def create_customer_wallet(request: web.Request) -> web.Response:
    return await _create(request, request.match_info["external_id"])


@_lago
async def list_customer_wallets(request: web.Request) -> web.Response:
    await _customer_id(request)
    await _fresh(request)
    page, per_page = page_of(request)
    rows, total = await _wallets(request).find_all(
        request.match_info["external_id"], page=page, per_page=per_page
    )
    return json_response(
        {"wallets": [wallet_json(r) for r in rows], "meta": page_meta(page, per_page, total)}
    )


@_lago
async def get_customer_wallet(request: web.Request) -> web.Response:
    await _fresh(request)
    return json_response({"wallet": wallet_json(await _wallet_by_code(request))})


@_lago
async def update_customer_wallet(request: web.Request) -> web.Response:
    data = _root(await read_json_object(request), "wallet")
    refuse_unsupported_wallet_fields(data)
    wallet = await _wallet_by_code(request)
    row = await _wallets(request).update(wallet["id"], data)
    _forget(request, row)
    return json_response({"wallet": wallet_json(row)})


@_lago
async def terminate_customer_wallet(request: web.Request) -> web.Response:
    wallet = await _wallet_by_code(request)
    row = await _wallets(request).terminate(wallet["id"])
    _forget(request, row)
    return json_response({"wallet": wallet_json(row)})


def _idempotency_key(request: web.Request) -> str | None:
    """The `Idempotency-Key` header; stored with a suffix (`:purchased`) in a column of 255."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and len(key) > 200:
        raise BillingValidationError("idempotency_key", "value_is_invalid")
    return key


@_lago
async def create_transaction(request: web.Request) -> web.Response:
    data = _root(await read_json_object(request), "wallet_transaction")
    refuse_unsupported(data, UNSUPPORTED_TRANSACTION_FIELDS)
    wallet_id = data.get("wallet_id")
    if not isinstance(wallet_id, str) or not wallet_id:
        raise BillingValidationError("wallet_id", "value_is_mandatory")
    top_up = TopUp(
        paid=credits_value(data, "paid_credits") or Decimal(0),
        granted=credits_value(data, "granted_credits") or Decimal(0),
        voided=credits_value(data, "voided_credits") or Decimal(0),
        name=lago_json.optional_str(data, "name"),
        key=_idempotency_key(request),
    )
    service = _wallets(request)
    await _fresh(request)
    made = await service.top_up(wallet_id, top_up)
    row = await service.get(wallet_id)
    rate = Decimal(row["rate_amount"])
    return json_response({"wallet_transactions": [transaction_json(t, rate) for t in made]})


@_lago
async def list_transactions(request: web.Request) -> web.Response:
    page, per_page = page_of(request)
    row, items, total = await _wallets(request).transactions(
        request.match_info["id"],
        page=page,
        per_page=per_page,
        status=request.query.get("transaction_status"),
        kind=request.query.get("transaction_type"),
    )
    rate = Decimal(row["rate_amount"])
    return json_response(
        {
            "wallet_transactions": [transaction_json(t, rate) for t in items],
            "meta": page_meta(page, per_page, total),
        }
    )


@_lago
async def get_transaction(request: web.Request) -> web.Response:
    tx, wallet = await _wallets(request).transaction(request.match_info["id"])
    return json_response(
        {"wallet_transaction": transaction_json(tx, Decimal(wallet["rate_amount"]))}
    )


def ledger_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "created_at": iso_utc(row["created_at"]),
        "kind": row["kind"],
        "key": row["key"],
        "hold_id": row.get("hold_id"),
        "transaction_id": row.get("transaction_id"),
        **{
            name: decimal_str(from_nanos(int(row[f"{name}_nanos"])))
            for name in ("available", "held", "consumed", "funding")
        },
        "reserved": _reserved(row),
    }


def _reserved(row: dict[str, Any]) -> str | None:
    """What the hold a post or release finishes had reserved: kept on a finish stored with
    its hold folded in, and what a finish takes out of `held` otherwise."""
    if row["kind"] not in ("post", "release"):
        return None
    stored = row.get("reserved_nanos")
    nanos = -int(row["held_nanos"]) if stored is None else int(stored)
    return decimal_str(from_nanos(nanos))


def ledger_csv(rows: list[dict[str, Any]], *, header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LEDGER_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow(ledger_json(row))
    return out.getvalue()


@_lago
async def wallet_ledger(request: web.Request) -> web.StreamResponse:
    """The ledger in storage order, after `after_id` when given: Lago-paged JSON, or the
    whole of it as CSV, streamed batch by batch."""
    await _fresh(request)
    wallet_id = request.match_info["id"]
    # Ids are BIGINTs: any after_id up to the largest one (an empty page past the end).
    after = query_int(request, "after_id", 0, minimum=0, maximum=2**63 - 1, error="invalid_value")
    engine = request.app[SERVICES].engine
    async with engine.connect() as conn:
        if await repo.wallet_by_id(conn, wallet_id) is None:
            raise BillingNotFound("wallet", wallet_id)
    if request.match_info.get("fmt") == ".csv" or request.query.get("format") == "csv":
        return await _stream_csv(request, engine, wallet_id, after)
    page, per_page = page_of(request)
    async with engine.connect() as conn:
        rows = await repo.entries_of(
            conn, wallet_id, after_id=after, limit=per_page, offset=(page - 1) * per_page
        )
        total = await repo.count_entries(conn, wallet_id, after_id=after)
    return json_response(
        {"entries": [ledger_json(r) for r in rows], "meta": page_meta(page, per_page, total)}
    )


async def _stream_csv(
    request: web.Request, engine: Any, wallet_id: str, after: int
) -> web.StreamResponse:
    """Every entry, read in batches by id (a connection per batch, none held while the client
    reads), so an export of any size is complete and memory stays flat."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="wallet-{wallet_id}.csv"',
        }
    )
    await response.prepare(request)
    header = True
    while True:
        async with engine.connect() as conn:
            rows = await repo.entries_of(conn, wallet_id, after_id=after, limit=CSV_BATCH)
        if rows or header:
            await response.write(ledger_csv(rows, header=header).encode())
        header = False
        if len(rows) < CSV_BATCH:
            break
        after = int(rows[-1]["id"])
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/wallets", create_wallet)
    r.add_get("/api/v1/wallets", list_wallets)
    r.add_get("/api/v1/wallets/{id}", get_wallet)
    r.add_put("/api/v1/wallets/{id}", update_wallet)
    r.add_delete("/api/v1/wallets/{id}", terminate_wallet)
    customer_wallets = "/api/v1/customers/{external_id}/wallets"
    r.add_post(customer_wallets, create_customer_wallet)
    r.add_get(customer_wallets, list_customer_wallets)
    r.add_get(customer_wallets + "/{code}", get_customer_wallet)
    r.add_put(customer_wallets + "/{code}", update_customer_wallet)
    r.add_delete(customer_wallets + "/{code}", terminate_customer_wallet)
    r.add_post("/api/v1/wallet_transactions", create_transaction)
    r.add_get("/api/v1/wallet_transactions/{id}", get_transaction)
    r.add_get("/api/v1/wallets/{id}/wallet_transactions", list_transactions)
    r.add_get("/api/v1/wallets/{id}/ledger{fmt:(\\.csv)?}", wallet_ledger)
