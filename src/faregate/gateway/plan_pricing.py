"""Customer prices from plans. A request billed to a subscription whose plan charges one of
its event codes is priced at the marginal fee it adds to the period (billing.request_fee):
fee(period usage after) - fee(period usage before), summed over the plan's charges, instead of
provider cost x markup. Prices of a period's requests then add up to the invoice's charges.

The plan and the period-to-date usage are loaded once per subscription and period, by a stage
before the upstream call; pricing after the call is in-memory arithmetic. The running usage is
this process's: with several replicas, each starts from the stored usage when it loads the
period and adds its own requests (exact for linear charges; for tiers and packages the
invoice, computed from every event, is the authority)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.billing import repository as repo
from faregate.billing.aggregate import Aggregate
from faregate.billing.billed import Billed, billed_of_row
from faregate.billing.charges import BucketKey
from faregate.billing.errors import BillingError
from faregate.billing.events import Event
from faregate.billing.periods import Period, subscription_period
from faregate.billing.request_fee import events_of_rows, request_fee
from faregate.gateway.call import Call
from faregate.metering.recorder import build_events

log = logging.getLogger("faregate.billing")

RETRY_S = 1.0  # a subscription without a usable plan is looked up again after this long
Unflushed = Callable[[str], Sequence[dict[str, Any]]]


@dataclass
class _Period:
    billed: Billed | None  # None: no plan prices this subscription's requests
    period: Period | None = None
    running: dict[BucketKey, Aggregate] = field(default_factory=dict)
    codes: frozenset[str] = frozenset()
    loaded_at: float = 0.0


class PlanPrices:
    def __init__(self, engine: AsyncEngine, currency: str, unflushed: Unflushed | None = None):
        self._engine = engine
        self._currency = currency.upper()
        self._unflushed = unflushed or (lambda _subscription: ())
        self._state: dict[str, _Period] = {}
        self._loading: dict[str, asyncio.Future[None]] = {}

    async def prepare(self, call: Call) -> None:
        """Load the subscription's plan and period usage unless this process has them."""
        subscription = call.principal.external_subscription_id
        if subscription is None or self._current(subscription, call) is not None:
            return
        state = self._state.get(subscription)
        if (
            state is not None
            and state.billed is None
            and time.monotonic() - state.loaded_at < RETRY_S
        ):
            return
        pending = self._loading.get(subscription)
        if pending is None:
            pending = asyncio.ensure_future(self._load(subscription, call))
            self._loading[subscription] = pending
            pending.add_done_callback(lambda _: self._loading.pop(subscription, None))
        await asyncio.shield(pending)

    async def _load(self, subscription: str, call: Call) -> None:
        state = _Period(None, loaded_at=time.monotonic())
        try:
            async with self._engine.connect() as conn:
                row = await repo.subscription_by_external_id(conn, subscription)
                if row is not None and row["status"] == "active":
                    billed = await billed_of_row(conn, row)
                    plan = billed.plan
                    if plan.amount_currency == self._currency and plan.charges:
                        period = subscription_period(
                            billed.subscription, plan.charges_interval, call.created_at
                        )
                        running = await repo.period_aggregates(
                            conn,
                            billed.subscription,
                            plan,
                            billed.metrics,
                            period,
                            rounded=False,
                            unflushed=self._unflushed(subscription),
                        )
                        codes = frozenset(c.billable_metric_code for c in plan.charges)
                        state = _Period(billed, period, running, codes, state.loaded_at)
        except BillingError as err:  # e.g. the request falls outside the subscription
            log.info("no plan price", extra={"subscription": subscription, "reason": err.message})
        except Exception:  # the request goes on, priced from the catalog
            log.exception("plan prices could not be loaded", extra={"subscription": subscription})
        self._state[subscription] = state

    def _current(self, subscription: str, call: Call) -> _Period | None:
        state = self._state.get(subscription)
        if state is None or state.billed is None or state.period is None:
            return None
        return state if state.period.contains(call.created_at) else None

    def _events(self, call: Call, state: _Period) -> list[Event]:
        assert state.billed is not None
        rows = build_events(
            call, state.billed.subscription.external_id, call.principal.external_customer_id
        )
        return [e for e in events_of_rows(rows) if e.code in state.codes]

    def estimate(self, call: Call) -> Decimal | None:
        """Worst-case plan price of a chat or embeddings call from its estimated tokens (for
        holds); None when no plan prices it."""
        subscription = call.principal.external_subscription_id
        state = self._current(subscription, call) if subscription else None
        if state is None or state.billed is None or call.kind not in ("chat", "embeddings"):
            return None
        base = {"model": call.group.name if call.group else call.model}
        events = [
            Event(
                f"{call.request_id}:estimate:{kind}",
                "tokens",
                call.created_at,
                {**base, "type": kind, "tokens": n},
            )
            for kind, n in (("input", call.est_input_tokens), ("output", call.est_output_tokens))
            if n and "tokens" in state.codes
        ]
        try:
            return request_fee(
                state.billed.plan, state.billed.metrics, events, state.running
            ).amount
        except BillingError:
            return None

    def settle(self, call: Call) -> Decimal | None:
        """The call's plan price, recorded into the period's running usage; None when no plan
        prices it (then cost x markup applies)."""
        subscription = call.principal.external_subscription_id
        state = self._current(subscription, call) if subscription else None
        if state is None or state.billed is None:
            return None
        events = self._events(call, state)
        if not events:
            return None
        try:
            priced = request_fee(state.billed.plan, state.billed.metrics, events, state.running)
        except BillingError as err:  # e.g. a weighted sum: it cannot be priced per event
            log.warning(
                "no plan price", extra={"subscription": subscription, "reason": err.message}
            )
            return None
        state.running = priced.running
        return priced.amount


class PlanPriceStage:
    """Before the upstream call: make sure the request's plan and period usage are loaded."""

    name = "plan_price"

    def __init__(self, prices: PlanPrices):
        self._prices = prices

    async def before(self, call: Call) -> None:
        await self._prices.prepare(call)

    async def after(self, call: Call) -> None:
        return None


class PlanPricer:
    """The pipeline's Pricer: the catalog's cost always; the plan's price when a plan prices
    the call, else the catalog's cost x markup."""

    def __init__(self, inner: Any, prices: PlanPrices):
        self._inner = inner
        self._prices = prices
        self.catalog = inner.catalog
        self.markup = inner.markup

    def estimate(self, deployment: Any, request: Any) -> Decimal | None:
        return self._inner.estimate(deployment, request)  # type: ignore[no-any-return]

    def route_request(self, call: Call) -> Any:
        return self._inner.route_request(call)

    def estimate_call(self, call: Call) -> None:
        self._inner.estimate_call(call)
        worst = self._prices.estimate(call)
        if worst is not None:  # hold enough for either way of pricing the call
            call.est_price = max(call.est_price or Decimal(0), worst)

    def settle(self, call: Call) -> None:
        self._inner.settle(call)
        price = self._prices.settle(call)
        if price is not None:
            call.price = price
