"""The wallets' side of the request path and their background loop.

`hold_first`/`finish` are what WalletStage calls: find the customer's wallets (cached for a
second), hold atomically in the hold book on the first one by priority that covers the
request, and record the ledger entries — through the journal writer (memory and Redis books:
no database round trip on the request path) or in the book's own transaction (PostgreSQL
book). After a debit: threshold top-ups and credit-threshold alerts. The loop, once a second,
releases holds whose TTL passed, closes pending holds left in the ledger by a dead process,
refreshes top-ups made elsewhere, terminates expired wallets and runs interval top-ups.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from faregate.auth import repository as customers_repo
from faregate.background import PeriodicTask
from faregate.wallets import credit_alerts, ledger
from faregate.wallets import repository as repo
from faregate.wallets.book import HoldBook, Snapshot
from faregate.wallets.credit_alerts import CreditAlerts
from faregate.wallets.model import Rule, nanos_to_credits
from faregate.wallets.render import wallet_json
from faregate.wallets.service import TopUp, WalletService
from faregate.wallets.topups import due_interval, interval_key
from faregate.wallets.writer import LedgerWriter

log = logging.getLogger("faregate.wallets")
# A customer's wallets are read again once they are half `WalletRuntime.cache_s` old (default
# CACHE_S, config `wallets.cache_s`), in the background, while requests go on with the
# wallets read before; a request waits for a read only past `cache_s`.
# (Under load a read on SQLite's connection thread takes 0.1-0.5 s to come back, and every
# request of the customer used to wait for it once a second.)
CACHE_S = 2.0
CREDIT_LIMIT_CODE = "credit_limit"


@dataclass(frozen=True, slots=True)
class Account:
    wallet_id: str
    rate: Decimal
    rules: tuple[Rule, ...] = ()
    extra: int = 0
    expires_at: float | None = None  # the wallet's expiration_at, as a Unix time
    has_thresholds: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        has = any(r.trigger == "threshold" for r in self.rules)
        object.__setattr__(self, "has_thresholds", has)

    def threshold_rules(self, now: datetime) -> tuple[Rule, ...]:
        """The threshold rules in force at `now`: active, started, not expired."""
        return tuple(r for r in self.rules if r.trigger == "threshold" and r.in_force(now))


@dataclass
class _Cached:
    accounts: tuple[Account, ...]
    at: float


@dataclass
class WalletRuntime:
    engine: AsyncEngine
    book: HoldBook
    service: WalletService
    writer: LedgerWriter | None = None
    hold_ttl_s: float = 660.0
    sweep_interval_s: float = 1.0
    alerts: CreditAlerts | None = None
    alert_levels: tuple[Decimal, ...] = ()  # credits; `credit.threshold` when crossed
    cache_s: float = CACHE_S  # how old a customer's wallets read here may be (see CACHE_S)
    cache_limit: int = 1024  # cached customers above which entries past cache_s are dropped
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _depleted: set[tuple[str, int]] = field(default_factory=set)
    _refreshing: set[str] = field(default_factory=set)  # customers read in the background
    _forgets: int = 0  # bumped by forget: a read begun before is not cached
    _loop: PeriodicTask | None = None
    _stale: repo.StaleHoldScan = field(init=False)
    _prune_above: int = field(init=False)

    def __post_init__(self) -> None:
        self._stale = repo.StaleHoldScan(self.hold_ttl_s)
        self._prune_above = self.cache_limit

    # -- accounts ------------------------------------------------------------------------

    def forget(self, external_customer_id: str) -> None:
        """Drop the cached wallet of a customer (its wallets changed in this process)."""
        self._forgets += 1
        self._cache.pop(external_customer_id, None)

    async def accounts_of(self, external_customer_id: str | None) -> tuple[Account, ...]:
        """The wallets a request of this customer may be held on, in the order they are
        tried (empty: the customer pays in arrears and is not held)."""
        if not external_customer_id:
            return ()
        cached = self._cache.get(external_customer_id)
        if cached is not None:
            age = time.monotonic() - cached.at
            if age < self.cache_s:
                if age >= self.cache_s / 2 and external_customer_id not in self._refreshing:
                    self._refreshing.add(external_customer_id)
                    self._spawn(self._refresh(external_customer_id))
                return cached.accounts
        accounts = await self._reload(external_customer_id, self.cache_s)
        if len(self._cache) > self._prune_above:
            self._prune()
        return accounts

    async def _reload(self, external_customer_id: str, max_age: float) -> tuple[Account, ...]:
        """The customer's wallets read again, unless another read (awaited first, under the
        customer's lock) left an entry younger than `max_age`."""
        lock = self._locks.setdefault(external_customer_id, asyncio.Lock())
        async with lock:
            cached = self._cache.get(external_customer_id)
            if cached is not None and time.monotonic() - cached.at < max_age:
                return cached.accounts
            started, forgets = time.monotonic(), self._forgets
            accounts = await self._load_accounts(external_customer_id)
            if forgets == self._forgets:  # else the wallets changed while they were read
                self._cache[external_customer_id] = _Cached(accounts, started)
            return accounts

    async def _refresh(self, external_customer_id: str) -> None:
        try:
            await self._reload(external_customer_id, self.cache_s / 2)
        except Exception:  # the entry stays until cache_s; a request past it reads again
            log.exception("reading the customer's wallets failed")
        finally:
            self._refreshing.discard(external_customer_id)

    def _prune(self) -> None:
        """Drop the cached wallets older than `cache_s` (they would be loaded again anyway) and
        the locks nobody holds or waits for, so both stay bounded by the customers of the
        last `cache_s` rather than growing by one entry per customer ever seen."""
        now = time.monotonic()
        for customer in [c for c, hit in self._cache.items() if now - hit.at >= self.cache_s]:
            del self._cache[customer]
        for customer in [c for c, lock in self._locks.items() if not lock.locked()]:
            if customer not in self._cache:
                del self._locks[customer]
        # Amortised: with more fresh entries than the limit, wait for twice as many.
        self._prune_above = max(self.cache_limit, 2 * len(self._cache))

    async def _load_accounts(self, external_customer_id: str) -> tuple[Account, ...]:
        """The customer's active prepaid wallets, lowest priority number first (then oldest),
        as Lago consumes them. Wallets past their `expiration_at` are terminated here (and by
        the background loop). A customer with a credit limit may go that far below zero on
        its last wallet; one with a limit and no wallet gets a `credit_limit` wallet (its
        payments are top-ups), so unpaid usage is held too."""
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            rows = await repo.wallets_of_customer(conn, external_customer_id, active_only=True)
            expired = [r for r in rows if _expired(r, now)]
            rows = [r for r in rows if not _expired(r, now)]
            customer = await customers_repo.customer_by_external_id(conn, external_customer_id)
            limit = int((customer or {}).get("credit_limit_nanos") or 0)
            if not rows and customer is not None and limit > 0:
                rows = [await _credit_limit_wallet(conn, customer, external_customer_id)]
        for row in expired:
            await self._terminate_expired(row["id"])
        accounts = []
        for i, row in enumerate(rows):
            if not await self.book.knows(row["id"]):
                await self.book.load(row["id"], _snapshot(row))
            rules = tuple(Rule.from_dict(r) for r in row.get("recurring_transaction_rules") or [])
            extra = limit if i == len(rows) - 1 else 0
            expiration = row.get("expiration_at")
            accounts.append(
                Account(
                    row["id"],
                    Decimal(row["rate_amount"]),
                    rules,
                    extra=extra,
                    expires_at=_utc(expiration).timestamp() if expiration else None,
                )
            )
        return tuple(accounts)

    async def _terminate_expired(self, wallet_id: str) -> None:
        try:
            await self.service.terminate(wallet_id)
        except Exception:
            log.exception("terminating an expired wallet failed", extra={"wallet_id": wallet_id})

    # -- the request path ----------------------------------------------------------------

    async def hold_first(
        self, accounts: tuple[Account, ...], hold_id: str, amount: int
    ) -> Account | None:
        """Hold `amount` on the first wallet, by priority, that covers all of it (a request is
        never split across wallets); None when none does. A wallet past its expiration is
        skipped even while the customer's wallets are cached."""
        now = time.time()
        for account in accounts:
            if account.expires_at is not None and account.expires_at <= now:
                continue
            if await self.hold(account, hold_id, amount):
                return account
        return None

    async def hold(self, account: Account, hold_id: str, amount: int) -> bool:
        try:
            ok = await self.book.hold(
                account.wallet_id, hold_id, amount, self.hold_ttl_s, account.extra
            )
        except KeyError:  # the shared book lost the wallet: reload it from the ledger
            async with self.engine.connect() as conn:
                row = await repo.wallet_by_id(conn, account.wallet_id)
            if row is None:
                return False
            await self.book.load(account.wallet_id, _snapshot(row))
            ok = await self.book.hold(
                account.wallet_id, hold_id, amount, self.hold_ttl_s, account.extra
            )
        if ok and self.writer is not None:
            self.writer.hold(account.wallet_id, hold_id, amount)
        return ok

    async def finish(
        self,
        account: Account,
        hold_id: str,
        held: int,
        actual: int | None,
        at: datetime | None = None,
        subscription_id: str | None = None,
    ) -> None:
        """`at`: when the request was made; its debit counts in the billing period holding
        it, and `subscription_id` (the subscription whose plan priced it, None for a
        catalog price) names the invoice its credits are applied to.

        A price above the hold (a worst case the estimate could not bound, such as a
        package started by a concurrent request) is posted up to the hold, and the rest only
        if the wallet covers it, as a hold of its own: the wallet never goes below zero (or
        its credit limit); what it could not cover stays due on the invoice."""
        posted = actual if actual is None else min(actual, held)
        sub = subscription_id
        after = await self.book.finish(account.wallet_id, hold_id, held, posted, at, sub)
        if after is None:
            return
        self._record_finish(account, hold_id, held, posted, at, sub)
        if actual is not None and posted is not None and actual > posted:
            excess = actual - posted
            after = await self._post_excess(account, hold_id, excess, at, sub) or after
        if actual:
            self._after_spend(account, after)
            self._check_alert_levels(account, after, actual)

    def _record_finish(
        self,
        account: Account,
        hold_id: str,
        held: int,
        posted: int | None,
        at: datetime | None,
        subscription_id: str | None = None,
    ) -> None:
        if self.writer is not None:
            entry = (
                ledger.release(account.wallet_id, hold_id, held)
                if posted is None
                else ledger.post(account.wallet_id, hold_id, held, posted, at, subscription_id)
            )
            self.writer.record(entry)

    async def _post_excess(
        self,
        account: Account,
        hold_id: str,
        excess: int,
        at: datetime | None,
        subscription_id: str | None,
    ) -> Snapshot | None:
        """Debit what a request cost above its hold iff the wallet covers it (an atomic hold
        on every book, then its post); the wallet's state after it, None when not covered."""
        excess_id = f"{hold_id}:excess"
        if not await self.hold(account, excess_id, excess):
            log.warning(
                "price above the hold not covered by the wallet",
                extra={"wallet_id": account.wallet_id, "hold_id": hold_id, "nanos": excess},
            )
            return None
        sub = subscription_id
        after = await self.book.finish(account.wallet_id, excess_id, excess, excess, at, sub)
        if after is not None:
            self._record_finish(account, excess_id, excess, excess, at, sub)
        return after

    def _check_alert_levels(self, account: Account, snapshot: Snapshot, actual: int) -> None:
        """`credit.threshold` for each configured level this debit took the balance to or
        through; the shared counter store makes replicas raise it once per episode."""
        if self.alerts is None or not self.alert_levels:
            return
        crossed = credit_alerts.crossing(snapshot, actual, account.rate, self.alert_levels)
        if crossed is not None:
            self._spawn(self._credit_alert(account.wallet_id, *crossed, snapshot))

    async def _credit_alert(
        self, wallet_id: str, before: Decimal, after: Decimal, snapshot: Snapshot
    ) -> None:
        assert self.alerts is not None
        try:
            await self.flush()  # the wallet in the alert includes this debit
            wallet = wallet_json(await self.service.get(wallet_id))
            await self.alerts.credit_thresholds(
                wallet, before, after, self.alert_levels, credit_alerts.episode(snapshot)
            )
        except Exception:
            log.exception("credit threshold alert failed", extra={"wallet_id": wallet_id})

    def _after_spend(self, account: Account, snapshot: Snapshot) -> None:
        if account.has_thresholds:  # most wallets have none: no clock, no credit conversion
            self._threshold_top_ups(account, snapshot)
        self._check_depleted(account, snapshot)

    def _threshold_top_ups(self, account: Account, snapshot: Snapshot) -> None:
        ongoing = nanos_to_credits(snapshot.available, account.rate)
        for rule in account.threshold_rules(datetime.now(UTC)):
            if rule.threshold_credits is not None and ongoing <= rule.threshold_credits:
                paid, granted = rule.top_up_credits(ongoing)
                key = f"threshold:{rule.lago_id}:{snapshot.version}"
                self._spawn(
                    self._top_up(
                        account,
                        TopUp(
                            paid=paid,
                            granted=granted,
                            source="threshold",
                            key=key,
                            name=rule.transaction_name,
                        ),
                    )
                )

    def _check_depleted(self, account: Account, snapshot: Snapshot) -> None:
        """`wallet.depleted_ongoing_balance` once per depletion: the marker is the wallet's
        funding version, which the next top-up or void changes."""
        if self.service.webhooks is None or snapshot.available > 0:
            return
        marker = (account.wallet_id, snapshot.version)
        if marker in self._depleted:
            return
        self._depleted.add(marker)
        self._spawn(self._depleted_webhook(account.wallet_id))

    async def _depleted_webhook(self, wallet_id: str) -> None:
        await self.flush()  # the wallet in the webhook includes the debit that emptied it
        row = await self.service.get(wallet_id)
        await self.service._emit("wallet.depleted_ongoing_balance", "wallet", wallet_json(row))

    async def _top_up(self, account: Account, top_up: TopUp) -> None:
        if top_up.paid <= 0 and top_up.granted <= 0:
            return
        try:
            await self.service.top_up(account.wallet_id, top_up)
        except Exception:
            log.exception("automatic top-up failed", extra={"wallet_id": account.wallet_id})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- background ----------------------------------------------------------------------

    async def start(self) -> None:
        if self.writer is not None:
            await self.writer.start()
        # Sleeps until the next sweep or close(): an idle server is not woken in between.
        self._loop = PeriodicTask("wallets", self.sweep_interval_s, self.tick, run_first=True)
        self._loop.start()

    async def tick(self, now: float | None = None) -> None:
        """One round of the background loop (tests call it to sweep at once)."""
        # The book drops its expired holds (the SQL book releases them in the ledger
        # itself). With a journaled book the ledger is released by its own scan, which only
        # finds holds the ledger has: a process that died between its hold in Redis and its
        # journal write leaves a hold the ledger never saw, and releasing that would
        # overstate the balance.
        await self.book.sweep_expired(now)
        if self.writer is not None:
            await self._close_stale_ledger_holds(now)
        async with self.engine.connect() as conn:
            rows = await repo.active_wallets(conn)
        for row in rows:  # top-ups and voids made anywhere reach the book once a second
            if await self.book.knows(row["id"]):
                await self.book.set_funded(
                    row["id"], int(row["funded_nanos"]), int(row["funded_version"])
                )
        at = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
        for row in rows:
            if _expired(row, at):
                await self._terminate_expired(row["id"])
                self.forget(row["external_customer_id"])
                continue
            for item in row.get("recurring_transaction_rules") or []:
                rule = Rule.from_dict(item)
                period = due_interval(rule, row["created_at"], at)
                if period is not None:
                    account = Account(row["id"], Decimal(row["rate_amount"]))
                    snapshot = _snapshot(row)
                    paid, granted = rule.top_up_credits(
                        nanos_to_credits(snapshot.available, account.rate)
                    )
                    await self._top_up(
                        account,
                        TopUp(
                            paid=paid,
                            granted=granted,
                            source="interval",
                            key=interval_key(rule, period),
                            name=rule.transaction_name,
                        ),
                    )

    async def _close_stale_ledger_holds(self, now: float | None) -> None:
        """Holds that reached the ledger (a journal replayed after a crash) but were never
        finished: release them in the ledger once their TTL passed."""
        at = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        async with self.engine.connect() as conn:
            stale = await self._stale.find(conn, at)
        if stale:
            assert self.writer is not None
            for row in stale:
                self.writer.record(
                    ledger.release(row["wallet_id"], row["hold_id"], int(row["held_nanos"]))
                )
            await self.writer.flush()

    async def flush(self) -> None:
        if self.writer is not None:
            await self.writer.flush()

    async def close(self) -> None:
        if self._loop is not None:
            await self._loop.stop(timeout=10)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        if self.writer is not None:
            await self.writer.close()
        close_book = getattr(self.book, "close", None)  # a book with connections of its own
        if close_book is not None:
            await close_book()


async def _credit_limit_wallet(
    conn: AsyncConnection, customer: dict[str, Any], external_customer_id: str
) -> dict[str, Any]:
    """The customer's automatic credit-limit wallet, made once whichever replica asks first:
    a unique index allows one active per customer, and the loser of a race reads the
    winner's."""
    values = {
        "code": CREDIT_LIMIT_CODE,
        "customer_id": customer["id"],
        "external_customer_id": external_customer_id,
        "name": "Credit limit",
        "currency": str(customer.get("currency") or "USD").upper(),
        "rate_amount": Decimal(1),
    }
    made = await repo.insert_wallet_if_absent(conn, values)
    if made is not None:
        return made
    found = await repo.active_wallet_by_code(conn, external_customer_id, CREDIT_LIMIT_CODE)
    assert found is not None  # the conflicting row is committed and active
    return found


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _expired(row: dict[str, Any], now: datetime) -> bool:
    expiration = row.get("expiration_at")
    return expiration is not None and bool(_utc(expiration) <= now)


def _snapshot(row: dict[str, Any]) -> Snapshot:
    return Snapshot(
        int(row["funded_nanos"]),
        int(row["funded_version"]),
        int(row["consumed_nanos"]),
        int(row["held_nanos"]),
    )
