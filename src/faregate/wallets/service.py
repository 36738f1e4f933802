"""Wallet operations for the API and the command line: create, update, terminate, top up or
void credits, read balances. Each top-up is one wallet transaction and one balanced ledger
entry in one database transaction; hold books learn of it at once (this process) or within a
second (others). Webhooks go out after the commit."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from faregate.auth import repository as customers_repo
from faregate.billing import lago_json
from faregate.billing import repository as billing_repo
from faregate.billing.currencies import check_currency_change, is_currency_code
from faregate.billing.errors import BillingNotFound, BillingValidationError
from faregate.store.counters.base import MAX_NANOS
from faregate.wallets import ledger, transaction_rows
from faregate.wallets import repository as repo
from faregate.wallets.book import HoldBook, Snapshot
from faregate.wallets.model import (
    credits_to_nanos,
    credits_value,
    in_utc,
    iso_utc,
    parse_priority,
    parse_rate,
    parse_rules,
)
from faregate.wallets.render import transaction_json, wallet_json

log = logging.getLogger("faregate.wallets")
VOID_HOLD_TTL_S = 60.0  # a void's hold outlives its transaction; the sweep ends an orphan
_CREDITS_FIELD = {
    "purchased": "paid_credits",
    "granted": "granted_credits",
    "voided": "voided_credits",
}


def _nanos(credits: Decimal, rate: Decimal, field: str) -> int:
    """What `credits` are worth, in nanos; refused (422 naming the field) beyond what a
    wallet's balance can hold (`MAX_NANOS`, ~4.6 billion units of the currency)."""
    amount = credits_to_nanos(credits, rate)
    if amount > MAX_NANOS:
        raise BillingValidationError(field, "value_is_out_of_range")
    return amount


@dataclass(frozen=True, slots=True)
class TopUp:
    paid: Decimal = Decimal(0)
    granted: Decimal = Decimal(0)
    voided: Decimal = Decimal(0)
    source: str = "manual"  # manual | interval | threshold
    name: str | None = None
    key: str | None = None  # idempotency: a second top-up with this key is a no-op


class WalletService:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        book: HoldBook | None = None,
        webhooks: Any = None,
        default_currency: str = "USD",
    ) -> None:
        self.engine = engine
        self.book = book
        self.webhooks = webhooks
        self.default_currency = default_currency

    async def _emit(self, webhook_type: str, object_type: str, obj: dict[str, Any]) -> None:
        if self.webhooks is None:
            return
        try:
            await self.webhooks.emit(webhook_type, object_type, obj)
        except Exception:  # a webhook must never undo a committed money movement
            log.exception("webhook emit failed", extra={"webhook_type": webhook_type})

    async def get(self, wallet_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = await repo.wallet_by_id(conn, wallet_id)
        if row is None:
            raise BillingNotFound("wallet", wallet_id)
        return row

    async def create(
        self, data: Mapping[str, object]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        external_id = lago_json.required_str(data, "external_customer_id")
        rate = parse_rate(data)
        rules = parse_rules(data.get("recurring_transaction_rules"))
        top_up = TopUp(
            paid=credits_value(data, "paid_credits") or Decimal(0),
            granted=credits_value(data, "granted_credits") or Decimal(0),
            name=lago_json.optional_str(data, "transaction_name"),
        )
        async with self.engine.begin() as conn:
            customer = await customers_repo.customer_by_external_id(conn, external_id)
            if customer is None:
                raise BillingNotFound("customer", external_id)
            if data.get("currency") is not None and not is_currency_code(data["currency"]):
                raise BillingValidationError("currency", "value_is_invalid")
            held = await billing_repo.lock_customer_currency(conn, customer["id"])
            currency = str(data.get("currency") or held or self.default_currency).upper()
            if held and currency != held:
                raise BillingValidationError("currency", "currencies_does_not_match")
            if held is None:  # Lago: a customer without a currency takes its wallet's
                in_use = await billing_repo.currencies_in_use(conn, external_id)
                check_currency_change(None, currency, in_use)
                await customers_repo.update_customer(conn, customer["id"], {"currency": currency})
            code = lago_json.optional_str(data, "code")
            if code is not None and await repo.code_taken(conn, customer["id"], code):
                raise BillingValidationError("code", "value_already_exist")
            created = iso_utc(repo.now())
            row = await _insert(
                conn,
                {
                    "code": code,
                    "customer_id": customer["id"],
                    "external_customer_id": external_id,
                    "name": lago_json.optional_str(data, "name"),
                    "currency": currency,
                    "rate_amount": rate,
                    "priority": parse_priority(data) or 50,
                    "expiration_at": in_utc(lago_json.timestamp(data, "expiration_at")),
                    "recurring_transaction_rules": [
                        {**r.to_dict(), "created_at": created} for r in rules
                    ],
                    "metadata": dict(lago_json.mapping(data.get("metadata") or {}, "metadata")),
                },
            )
            transactions = await self._top_up(conn, row, top_up)
            row = await repo.wallet_by_id(conn, row["id"]) or row
        await self._after_top_up(row, transactions)
        await self._emit("wallet.created", "wallet", wallet_json(row))
        return row, transactions

    async def update(self, wallet_id: str, data: Mapping[str, object]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if "name" in data:
            values["name"] = lago_json.optional_str(data, "name")
        if data.get("code") is not None:
            values["code"] = lago_json.optional_str(data, "code")
        if data.get("priority") is not None:
            values["priority"] = parse_priority(data)
        if "expiration_at" in data:
            values["expiration_at"] = in_utc(lago_json.timestamp(data, "expiration_at"))
        if data.get("metadata") is not None:
            values["metadata"] = dict(lago_json.mapping(data["metadata"], "metadata"))
        async with self.engine.begin() as conn:
            row = await repo.wallet_by_id(conn, wallet_id, lock=True)
            if row is None:
                raise BillingNotFound("wallet", wallet_id)
            if data.get("recurring_transaction_rules") is not None:
                values["recurring_transaction_rules"] = _merge_rules(
                    row.get("recurring_transaction_rules") or [],
                    data["recurring_transaction_rules"],
                )
            code = values.get("code")
            if (
                code is not None
                and row["status"] == "active"
                and await repo.code_taken(conn, row["customer_id"], code, other_than=wallet_id)
            ):
                raise BillingValidationError("code", "value_already_exist")
            if values:
                try:
                    async with conn.begin_nested():
                        await repo.update_wallet(conn, wallet_id, values)
                except IntegrityError:  # a concurrent create or update took the code first
                    raise BillingValidationError("code", "value_already_exist") from None
            row = await repo.wallet_by_id(conn, wallet_id) or row
        await self._emit("wallet.updated", "wallet", wallet_json(row))
        return row

    async def terminate(self, wallet_id: str) -> dict[str, Any]:
        """Terminate a wallet (DELETE, or its `expiration_at` passed). Only the call that
        changes the status sends `wallet.terminated`, so replicas racing to terminate an
        expired wallet send it once."""
        async with self.engine.begin() as conn:
            changed = await repo.terminate_wallet(conn, wallet_id, repo.now())
            row = await repo.wallet_by_id(conn, wallet_id)
            if row is None:
                raise BillingNotFound("wallet", wallet_id)
        if changed:
            await self._emit("wallet.terminated", "wallet", wallet_json(row))
        return row

    async def top_up(self, wallet_id: str, top_up: TopUp) -> list[dict[str, Any]]:
        void_hold = await self._hold_void(wallet_id, top_up)
        try:
            async with self.engine.begin() as conn:
                row = await repo.wallet_by_id(conn, wallet_id, lock=True)
                if row is None:
                    raise BillingNotFound("wallet", wallet_id)
                if row["status"] != "active":
                    raise BillingValidationError("wallet_id", "wallet_is_terminated")
                transactions = await self._top_up(conn, row, top_up, checked=void_hold is not None)
                row = await repo.wallet_by_id(conn, wallet_id) or row
            await self._after_top_up(row, transactions)
        finally:
            if void_hold is not None:
                # After set_funded: the void is in the book's funded sum, so the hold that
                # reserved it goes (for a moment both count: never less conservative).
                assert self.book is not None
                await self.book.finish(wallet_id, void_hold[0], void_hold[1], None)
        return transactions

    async def _hold_void(self, wallet_id: str, top_up: TopUp) -> tuple[str, int] | None:
        """With a hold book that lags the wallet row (in process, Redis: entries reach the
        database within `journal_flush_s`), a void is checked against the book, by the same atomic step
        as a request's hold: the voided credits are held until the void is recorded, so no
        request can hold them meanwhile. Refused (422) when the ongoing balance does not
        cover it. None when there is nothing to void or the row is the book (PostgreSQL)."""
        if top_up.voided <= 0 or self.book is None or self.book.durable:
            return None
        row = await self.get(wallet_id)
        amount = _nanos(top_up.voided, Decimal(row["rate_amount"]), "voided_credits")
        if amount <= 0:
            return None
        hold_id = f"void:{repo.new_id()}"
        try:
            if not await self.book.knows(wallet_id):
                await self.book.load(wallet_id, _book_snapshot(row))
            held = await self.book.hold(wallet_id, hold_id, amount, VOID_HOLD_TTL_S)
        except KeyError:  # the shared book lost the wallet: reload it from the ledger
            await self.book.load(wallet_id, _book_snapshot(await self.get(wallet_id)))
            held = await self.book.hold(wallet_id, hold_id, amount, VOID_HOLD_TTL_S)
        if not held:
            raise BillingValidationError("voided_credits", "insufficient_credits")
        return hold_id, amount

    async def _top_up(
        self,
        conn: AsyncConnection,
        wallet: Mapping[str, Any],
        top_up: TopUp,
        *,
        checked: bool = False,
    ) -> list[dict[str, Any]]:
        """`checked`: a void already held in the hold book (else checked on the locked row,
        which is the book itself for PostgreSQL's)."""
        rate = Decimal(wallet["rate_amount"])
        funded = int(wallet.get("funded_nanos") or 0)
        made = []
        for status, credits in (
            ("purchased", top_up.paid),
            ("granted", top_up.granted),
            ("voided", top_up.voided),
        ):
            amount = _nanos(credits, rate, _CREDITS_FIELD[status])
            if amount <= 0:
                continue
            if status != "voided":
                funded += amount
                if funded > MAX_NANOS:  # nothing of this top-up is kept: its transaction rolls back
                    raise BillingValidationError(_CREDITS_FIELD[status], "value_is_out_of_range")
            if status == "voided" and not checked:
                ongoing = (
                    int(wallet["funded_nanos"])
                    - int(wallet["consumed_nanos"])
                    - int(wallet["held_nanos"])
                )
                if amount > ongoing:
                    raise BillingValidationError("voided_credits", "insufficient_credits")
            key = f"{top_up.key}:{status}" if top_up.key else None
            tx = await transaction_rows.insert_transaction(
                conn,
                {
                    "wallet_id": wallet["id"],
                    "transaction_status": status,
                    "transaction_type": "outbound" if status == "voided" else "inbound",
                    "source": top_up.source,
                    "amount_nanos": amount,
                    "name": top_up.name,
                    "idempotency_key": key,
                },
            )
            if tx is None:  # this top-up was already made
                continue
            entry = (ledger.void if status == "voided" else ledger.credit)(
                wallet["id"], tx["id"], amount
            )
            await repo.apply_entries(conn, [entry])
            made.append(tx)
        return made

    async def _after_top_up(
        self, wallet: Mapping[str, Any], transactions: list[dict[str, Any]]
    ) -> None:
        if self.book is not None and await self.book.knows(wallet["id"]):
            await self.book.set_funded(
                wallet["id"], int(wallet["funded_nanos"]), int(wallet["funded_version"])
            )
        rate = Decimal(wallet["rate_amount"])
        for tx in transactions:
            await self._emit(
                "wallet_transaction.created", "wallet_transaction", transaction_json(tx, rate)
            )

    async def transactions(
        self,
        wallet_id: str,
        *,
        page: int = 1,
        per_page: int = 1000,
        status: str | None = None,
        kind: str | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
        """The wallet, one page of its transactions (oldest first) and how many match."""
        async with self.engine.connect() as conn:
            row = await repo.wallet_by_id(conn, wallet_id)
            if row is None:
                raise BillingNotFound("wallet", wallet_id)
            items, total = await transaction_rows.transactions_of(
                conn, wallet_id, per_page, (page - 1) * per_page, status=status, kind=kind
            )
            return row, items, total

    async def transaction(self, transaction_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A wallet transaction and its wallet."""
        async with self.engine.connect() as conn:
            tx = await transaction_rows.transaction_by_id(conn, transaction_id)
            wallet = None if tx is None else await repo.wallet_by_id(conn, tx["wallet_id"])
        if tx is None or wallet is None:
            raise BillingNotFound("wallet_transaction", transaction_id)
        return tx, wallet

    async def find_all(
        self, external_customer_id: str | None = None, *, page: int = 1, per_page: int = 1000
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of wallets (oldest first), optionally of one customer, and the total."""
        async with self.engine.connect() as conn:
            rows = await repo.list_wallets(
                conn, external_customer_id, per_page, (page - 1) * per_page
            )
            return rows, await repo.count_wallets(conn, external_customer_id)


async def _insert(conn: AsyncConnection, values: dict[str, Any]) -> dict[str, Any]:
    """Insert a wallet; a code that a concurrent create took first (the unique index on a
    customer's active codes refuses this one) is Lago's 422 `value_already_exist`."""
    try:
        async with conn.begin_nested():
            return await repo.insert_wallet(conn, values)
    except IntegrityError:
        raise BillingValidationError("code", "value_already_exist") from None


def _merge_rules(existing: list[dict[str, Any]], items: object) -> list[dict[str, Any]]:
    """Lago replaces the rule list; a rule naming an existing lago_id keeps its identity."""
    known = {r.get("lago_id"): r for r in existing}
    merged = []
    for rule in parse_rules(items):
        created = (known.get(rule.lago_id) or {}).get("created_at") or iso_utc(repo.now())
        merged.append({**rule.to_dict(), "created_at": created})
    return merged


def _book_snapshot(row: Mapping[str, Any]) -> Snapshot:
    return Snapshot(
        int(row["funded_nanos"]),
        int(row["funded_version"]),
        int(row["consumed_nanos"]),
        int(row["held_nanos"]),
    )
