"""Invoicing verbs over storage: the billing run (every ended period becomes an invoice),
refreshing a draft, finalizing one. Prepaid credits are applied in exactly one place,
`CreditsApplier.apply`, when a draft is finalized. Webhooks go out after the commit.

Lifecycle (Lago's): with no grace period an ended period's invoice is finalized at once
(`invoice.created`); with one, it stays a draft (`invoice.drafted`), is recomputed by every
run and by `refresh` so late events count, and is finalized when the grace period is over
or on demand (`invoice.created`, and `invoice.finalized`). A finalized invoice is immutable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from faregate.auth import repository as customers_repo
from faregate.billing import invoice_repository as irepo
from faregate.billing import repository as repo
from faregate.billing.billed import Billed, billed_of_row
from faregate.billing.errors import BillingError, BillingNotFound, BillingValidationError
from faregate.billing.invoices import Invoice, build_invoice, build_opening_invoice
from faregate.billing.lago_invoice import CatalogIds, invoice_object
from faregate.billing.lago_subscription import subscription_object
from faregate.billing.periods import Period, first_period, next_period, subscription_period

log = logging.getLogger("faregate.billing")

PERIODIC = "subscription_periodic"
STARTING = "subscription_starting"
TERMINATING = "subscription_terminating"  # the last period of a terminated subscription
MAX_PERIODS_PER_RUN = 1000  # per subscription: a very old subscription catches up over runs


class Webhooks(Protocol):
    async def emit(self, webhook_type: str, object_type: str, obj: dict[str, Any]) -> None: ...


class CreditsApplier(Protocol):
    """Applies prepaid credits to a draft about to be finalized, inside the finalizing
    transaction: returns `invoice.with_credits(available)` and records what it consumed
    (the invoice's `prepaid_credit_amount_cents`). The only place credits touch invoices."""

    async def apply(self, conn: AsyncConnection, invoice: Invoice, invoice_id: str) -> Invoice: ...


class NoCredits:
    async def apply(self, conn: AsyncConnection, invoice: Invoice, invoice_id: str) -> Invoice:
        return invoice


@dataclass(frozen=True)
class InvoicingSettings:
    grace_period: timedelta = timedelta(0)
    tax_rate: Decimal = Decimal(0)  # percent
    number_prefix: str = "FG"
    run_interval: float = 60.0  # seconds between background billing runs; 0 disables them
    public_url: str | None = None  # base URL of file_url in webhooks

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> InvoicingSettings:
        public_url = section.get("public_url")
        return cls(
            grace_period=timedelta(days=float(section.get("grace_period_days", 0))),
            tax_rate=Decimal(str(section.get("tax_rate", "0"))),
            number_prefix=str(section.get("invoice_prefix", "FG")),
            run_interval=float(section.get("run_interval", 60)),
            public_url=str(public_url).rstrip("/") if public_url else None,
        )


@dataclass(frozen=True)
class Failure:
    """A subscription the run could not invoice, and why, in words safe to show: a billing
    error's field and code, else `internal_error` (the log has the rest)."""

    external_subscription_id: str
    reason: str


@dataclass
class RunResult:
    created: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    def fail(self, external_subscription_id: str, err: Exception) -> None:
        log.error(
            "billing run failed for a subscription",
            exc_info=err,
            extra={"subscription": external_subscription_id},
        )
        self.failed.append(Failure(external_subscription_id, _reason(err)))

    def failed_for(self, external_subscription_id: str) -> bool:
        return any(f.external_subscription_id == external_subscription_id for f in self.failed)


def _reason(err: Exception) -> str:
    if isinstance(err, BillingValidationError):
        return f"{err.field}: {err.error_code}"
    if isinstance(err, BillingError):
        return err.code
    return "internal_error"  # a foreign error's text may carry SQL, values or addresses


FileUrl = Callable[[Mapping[str, Any]], str | None]


def ended_periods(billed: Billed, now: datetime) -> Iterator[Period]:
    """The subscription's charges periods that ended at or before `now`, oldest first."""
    interval = billed.plan.charges_interval
    period: Period | None = first_period(billed.subscription, interval)
    count = 0
    while period is not None and period.end <= now and count < MAX_PERIODS_PER_RUN:
        yield period
        count += 1
        period = next_period(billed.subscription, interval, period)


def _closing_reason(billed: Billed, period: Period) -> str:
    """Lago's invoicing_reason of an ended period's invoice: `subscription_terminating` for
    the period a termination ends, else `subscription_periodic`."""
    sub = billed.subscription
    ending = sub.ending_at
    if sub.status == "terminated" and ending is not None and period.end >= ending:
        return TERMINATING
    return PERIODIC


class Invoicing:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: InvoicingSettings | None = None,
        *,
        webhooks: Webhooks | None = None,
        credits: CreditsApplier | None = None,
        file_url: FileUrl | None = None,
        unflushed: Callable[[str], Sequence[dict[str, Any]]] | None = None,
    ):
        self.engine = engine
        # A subscription's events accepted by this process's usage writer, not stored yet.
        self.unflushed = unflushed or (lambda _subscription: ())
        self.settings = settings or InvoicingSettings()
        self.webhooks = webhooks
        self.credits: CreditsApplier = credits or NoCredits()
        self.file_url = file_url

    # -- the billing run ----------------------------------------------------------------

    async def run(self, now: datetime | None = None) -> RunResult:
        """Activate the pending subscriptions whose start has come, terminate those whose
        `ending_at` has passed, invoice every ended
        period not invoiced yet, refresh drafts, finalize the drafts whose grace period is
        over. Safe to run concurrently on several replicas."""
        now = now or datetime.now(UTC)
        result = RunResult()
        async with self.engine.begin() as conn:
            started = await repo.activate_started(conn, now)
            ended = await repo.terminate_ended(conn, now)
        for row in started:  # Lago's Subscriptions::ActivateService says so
            await self._emit_subscription("subscription.started", row)
        for row in ended:  # and its TerminateService, at a subscription's ending_at
            await self._emit_subscription("subscription.terminated", row)
        async with self.engine.connect() as conn:
            rows = await repo.billable_subscriptions(conn)
        for row in rows:
            try:
                await self._bill_subscription(row, now, result)
            except Exception as err:  # one broken subscription must not stop the others
                result.fail(row["external_id"], err)
        async with self.engine.connect() as conn:
            drafts = await irepo.drafts(conn)
        for draft in drafts:
            subscription = draft["external_subscription_id"]
            if result.failed_for(subscription):
                continue  # reported once
            try:
                await self._close_draft(draft, now, result)
            except Exception as err:
                result.fail(subscription, err)
        return result

    async def _close_draft(
        self, draft: Mapping[str, Any], now: datetime, result: RunResult
    ) -> None:
        """Finalize a draft past its grace period, else recompute it (unless just made)."""
        if draft["to_datetime"] + self.settings.grace_period <= now:
            if await self._finalize_row(draft["id"], now) is not None:
                result.finalized.append(draft["id"])
        elif draft["id"] not in result.created:
            await self.refresh(draft["id"])
            result.refreshed.append(draft["id"])

    async def _bill_subscription(
        self, row: Mapping[str, Any], now: datetime, result: RunResult
    ) -> None:
        async with self.engine.connect() as conn:
            billed = await billed_of_row(conn, row)
            done = await irepo.invoiced_periods(conn, row["id"])
        wanted: list[tuple[str, Period]] = []
        plan = billed.plan
        if plan.pay_in_advance and plan.amount_cents:
            opening = first_period(billed.subscription, plan.interval)
            if opening.start <= now and (STARTING, opening.start) not in done:
                wanted.append((STARTING, opening))
        # An ended period is invoiced once, periodic or terminating (the last period of a
        # subscription terminated before this reason existed was invoiced as periodic).
        closed = {start for reason, start in done if reason in (PERIODIC, TERMINATING)}
        wanted += [
            (_closing_reason(billed, p), p)
            for p in ended_periods(billed, now)
            if p.start not in closed
        ]
        for reason, period in wanted:
            await self._create(billed, reason, period, now, result)

    async def _create(
        self, billed: Billed, reason: str, period: Period, now: datetime, result: RunResult
    ) -> None:
        try:
            async with self.engine.begin() as conn:
                invoice = await self._compute(conn, billed, reason, period)
                ids = {
                    "customer_id": billed.row.get("customer_id"),
                    "subscription_id": billed.row["id"],
                }
                row = await irepo.insert_invoice(conn, invoice, ids=ids, billing_reason=reason)
        except IntegrityError:  # another replica invoiced this period first
            return
        result.created.append(row["id"])
        if self.settings.grace_period and period.end + self.settings.grace_period > now:
            await self._emit("invoice.drafted", row)
        elif await self._finalize_row(row["id"], now) is not None:
            result.finalized.append(row["id"])

    async def _compute(
        self, conn: AsyncConnection, billed: Billed, reason: str, period: Period
    ) -> Invoice:
        plan, sub = billed.plan, billed.subscription
        currency, tax_rate = plan.amount_currency, self.settings.tax_rate
        if reason == STARTING:
            return build_opening_invoice(sub, plan, currency=currency, tax_rate=tax_rate)
        aggregates = await repo.period_aggregates(
            conn, sub, plan, billed.metrics, period, unflushed=self.unflushed(sub.external_id)
        )
        return build_invoice(
            sub, plan, billed.metrics, aggregates, period, currency=currency, tax_rate=tax_rate
        )

    async def _recompute(self, conn: AsyncConnection, row: Mapping[str, Any]) -> Invoice:
        # By the invoice's own subscription: its external_id may have been taken since by a
        # new subscription.
        subscription = await repo.subscription_by_id(conn, row["subscription_id"])
        if subscription is None:
            raise BillingNotFound("subscription", row["external_subscription_id"])
        billed = await billed_of_row(conn, subscription)
        if row["billing_reason"] == STARTING:
            period = first_period(billed.subscription, billed.plan.interval)
        else:
            period = subscription_period(
                billed.subscription, billed.plan.charges_interval, row["from_datetime"]
            )
        return await self._compute(conn, billed, row["billing_reason"], period)

    # -- verbs on one invoice -----------------------------------------------------------

    async def refresh(self, invoice_id: str) -> dict[str, Any]:
        """Recompute a draft from the events stored now; a finalized invoice is returned as
        it is (it is never recomputed)."""
        async with self.engine.begin() as conn:
            row = await self._row(conn, invoice_id)
            if row["status"] == "draft":
                await irepo.update_draft(conn, invoice_id, await self._recompute(conn, row))
                row = await self._row(conn, invoice_id)
        return row

    async def finalize(self, invoice_id: str, now: datetime | None = None) -> dict[str, Any]:
        """Recompute the draft, apply prepaid credits, number it and freeze it. Finalizing a
        finalized invoice changes nothing."""
        finalized = await self._finalize_row(invoice_id, now or datetime.now(UTC))
        if finalized is not None:
            return finalized
        async with self.engine.connect() as conn:
            return await self._row(conn, invoice_id)

    async def _finalize_row(self, invoice_id: str, now: datetime) -> dict[str, Any] | None:
        """The finalized row, or None when it was finalized already (by us or a replica)."""
        for _ in range(10):
            try:
                async with self.engine.begin() as conn:
                    row = await self._row(conn, invoice_id)
                    if row["status"] != "draft":
                        return None
                    invoice = await self._recompute(conn, row)
                    invoice = await self.credits.apply(conn, invoice, invoice_id)
                    invoice = invoice.finalize(now)
                    if not await irepo.finalize(
                        conn, invoice_id, invoice, number_prefix=self.settings.number_prefix
                    ):
                        return None
                    row = await self._row(conn, invoice_id)
            except IntegrityError:  # a concurrent finalization took the number: next one
                continue
            await self._emit("invoice.created", row)
            await self._emit("invoice.finalized", row)
            return row
        raise RuntimeError("could not number the invoice")  # pragma: no cover

    async def _row(self, conn: AsyncConnection, invoice_id: str) -> dict[str, Any]:
        row = await irepo.invoice_by_id(conn, invoice_id)
        if row is None:
            raise BillingNotFound("invoice", invoice_id)
        return row

    # -- webhooks -----------------------------------------------------------------------

    async def invoice_json(
        self, row: Mapping[str, Any], file_url: str | None = None
    ) -> dict[str, Any]:
        """Lago's `invoice` object of a stored invoice, with its customer."""
        async with self.engine.connect() as conn:
            customer = None
            if row.get("customer_id"):
                customer = await customers_repo.customer_by_id(conn, row["customer_id"])
            plan = await repo.plan_by_code(conn, row["plan_code"])
            codes = {f["billable_metric_code"] for f in row["document"]["fees"]} - {None}
            metric_ids = await repo.metric_ids_by_codes(conn, codes)
        ids = CatalogIds(plan["id"] if plan else None, metric_ids)
        return invoice_object(row, customer=customer, ids=ids, file_url=file_url)

    async def _emit_subscription(self, webhook_type: str, row: Mapping[str, Any]) -> None:
        if self.webhooks is None:
            return
        try:
            await self.webhooks.emit(webhook_type, "subscription", subscription_object(row))
        except Exception:  # a webhook never undoes what was done
            log.exception("subscription webhook failed", extra={"subscription": row["id"]})

    async def _emit(self, webhook_type: str, row: Mapping[str, Any]) -> None:
        if self.webhooks is None:
            return
        try:
            url = self.file_url(row) if self.file_url else None
            await self.webhooks.emit(webhook_type, "invoice", await self.invoice_json(row, url))
        except Exception:  # a webhook never undoes an invoice
            log.exception("invoice webhook failed", extra={"invoice": row["id"]})
