"""Customer prices from plans. A request billed to a subscription whose plan charges one of
its event codes is priced at the marginal fee it adds to the period (billing.request_fee):
fee(period usage after) - fee(period usage before), summed over the plan's charges, instead of
provider cost x markup. Prices of a period's requests then add up to the invoice's charges.

The plan and the period-to-date usage are loaded once per subscription and period, by a stage
before the upstream call, which also re-reads the subscription and plan once a second (a
termination or a plan change applies within a second); the worst case held before the call
(plan_worst_case) and the price after it are in-memory arithmetic. The running usage is
this process's: with several replicas, each starts from the stored usage when it loads the
period and adds its own requests (exact for linear charges; for tiers and packages the
invoice, computed from every event, is the authority)."""

from __future__ import annotations

import asyncio
import json
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
from faregate.billing.request_fee import (
    events_of_rows,
    request_fee,
    worst_buckets,
    worst_fee_of_buckets,
    worst_request_fee,
)
from faregate.config import Deployment
from faregate.errors import FaregateError
from faregate.gateway.call import Call
from faregate.gateway.plan_worst_case import (
    PartsOf,
    PlanShape,
    group_quantity,
    representatives,
    template_key,
    worst_event_groups,
    worst_usages,
)
from faregate.gateway.pricing import REACHABLE, billed_tier, service_tier_of
from faregate.metering.recorder import build_events
from faregate.pricing import CostParts, cost_parts
from faregate.usage import Usage

log = logging.getLogger("faregate.billing")

TEMPLATES = 256  # kinds of request whose worst-case buckets are kept per subscription
# A subscription's status and plan are looked up again after this long (the default of
# `PlanPrices.check_s`, config `billing.plan_check_s`); from half of it on, in the background,
# while requests go on with what was seen before: a request waits for the lookup only past it.
CHECK_S = 1.0
Unflushed = Callable[[str], Sequence[dict[str, Any]]]
_SCRATCH = "plan_price"
# call.scratch key: the external id of the subscription whose plan priced the call.
PRICED_BY = "priced_by"


def _fingerprint(found: tuple[dict[str, Any], dict[str, Any] | None] | None) -> Any:
    """What, when it changes, changes how a subscription's requests are priced: which
    subscription the external_id means (a terminated one's may be taken again), its status,
    plan, end and termination, and the plan's definition."""
    if found is None:
        return None
    row, plan = found
    return (
        row.get("id"),
        row.get("status"),
        row.get("plan_code"),
        row.get("ending_at"),
        row.get("terminated_at"),
        None if plan is None else plan["id"],
        None if plan is None else json.dumps(plan["definition"], sort_keys=True, default=str),
    )


@dataclass
class _Period:
    billed: Billed | None  # None: no plan prices this subscription's requests
    period: Period | None = None
    running: dict[BucketKey, Aggregate] = field(default_factory=dict)
    codes: frozenset[str] = frozenset()
    checked_at: float = 0.0  # when the subscription was last seen unchanged (monotonic)
    fingerprint: Any = None
    shape: PlanShape = field(default_factory=lambda: PlanShape(False, False))
    # template_key -> (group names, their buckets): see PlanPrices._templated_fee.
    templates: dict[Any, Any] = field(default_factory=dict)

    def prices(self, call: Call) -> bool:
        return (
            self.billed is not None
            and self.period is not None
            and self.period.contains(call.created_at)
        )


class PlanPrices:
    def __init__(
        self,
        engine: AsyncEngine,
        currency: str,
        unflushed: Unflushed | None = None,
        *,
        check_s: float = CHECK_S,
    ):
        self._engine = engine
        self._check_s = check_s
        self._refresh_s = check_s / 2
        self._currency = currency.upper()
        self._unflushed = unflushed or (lambda _subscription: ())
        self._state: dict[str, _Period] = {}
        self._loading: dict[str, asyncio.Future[None]] = {}

    async def prepare(self, call: Call) -> None:
        """Make sure this process has the subscription's plan and period usage, seen within
        the last `check_s` (default CHECK_S, a second): a terminated subscription or a
        changed plan stops pricing requests within it, at one or two queries per subscription
        and `check_s`, not per request (past half of it the lookup runs in the background;
        requests wait for it only past `check_s`). The state the request was prepared with
        prices its estimate and its settlement."""
        subscription = call.principal.external_subscription_id
        if subscription is None:
            return
        state = self._state.get(subscription)
        age = self._check_s if state is None else time.monotonic() - state.checked_at
        if age >= self._check_s or (
            state is not None and state.billed is not None and not state.prices(call)
        ):
            await asyncio.shield(self._refreshing(subscription, call))
            state = self._state.get(subscription)
        elif age >= self._refresh_s and subscription not in self._loading:
            self._refreshing(subscription, call)  # this request goes on with `state`
        if state is not None and state.prices(call):
            call.scratch[_SCRATCH] = state

    def _refreshing(self, subscription: str, call: Call) -> asyncio.Future[None]:
        """The lookup of `subscription` under way, else a new one: requests share it."""
        pending = self._loading.get(subscription)
        if pending is None:
            pending = asyncio.ensure_future(self._refresh(subscription, call))
            self._loading[subscription] = pending
            pending.add_done_callback(lambda _: self._loading.pop(subscription, None))
        return pending

    async def _refresh(self, subscription: str, call: Call) -> None:
        """Keep the loaded state when its subscription and plan are unchanged (one query),
        else load it again."""
        state = self._state.get(subscription)
        if state is not None and state.prices(call):
            started = time.monotonic()
            try:
                async with self._engine.connect() as conn:
                    found = await repo.subscription_and_plan(conn, subscription)
            except Exception:  # keep pricing with what is loaded; look again next time
                log.exception("subscription check failed", extra={"subscription": subscription})
                return
            if _fingerprint(found) == state.fingerprint:
                state.checked_at = started
                return
        await self._load(subscription, call)

    async def _load(self, subscription: str, call: Call) -> None:
        state = _Period(None, checked_at=time.monotonic())
        try:
            async with self._engine.connect() as conn:
                found = await repo.subscription_and_plan(conn, subscription)
                state.fingerprint = _fingerprint(found)
                row = found[0] if found is not None else None
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
                        state = _Period(
                            billed,
                            period,
                            running,
                            codes,
                            state.checked_at,
                            state.fingerprint,
                            PlanShape.of(plan, billed.metrics),
                        )
        except BillingError as err:  # e.g. the request falls outside the subscription
            log.info("no plan price", extra={"subscription": subscription, "reason": err.message})
        except Exception:  # the request goes on, priced from the catalog
            log.exception("plan prices could not be loaded", extra={"subscription": subscription})
        self._state[subscription] = state

    def _current(self, call: Call) -> _Period | None:
        """The state `prepare` found for this call (None: no plan prices it)."""
        state: _Period | None = call.scratch.get(_SCRATCH)
        return state if state is not None and state.prices(call) else None

    def prices(self, call: Call) -> bool:
        """Whether a plan prices this call (as `prepare` found it)."""
        return self._current(call) is not None

    def _events(self, call: Call, state: _Period) -> list[Event]:
        assert state.billed is not None
        rows = build_events(
            call, state.billed.subscription.external_id, call.principal.external_customer_id
        )
        return [e for e in events_of_rows(rows) if e.code in state.codes]

    def estimate(
        self, call: Call, deployments: Sequence[Deployment], parts_of: PartsOf
    ) -> Decimal | None:
        """The most the plan can price the call at, before its upstream call (for holds): the
        largest worst-case marginal fee over the deployments it can reach, from the events
        `build_events` would make of its worst-case usage (see plan_worst_case); None when no
        plan prices it."""
        state = self._current(call)
        if state is None or state.billed is None:
            return None
        worst: Decimal | None = None
        try:
            for deployment in representatives(deployments, state.shape.per_deployment):
                if state.shape.templated:
                    fee = self._templated_fee(call, deployment, state)
                else:
                    fee = self._fee(call, deployment, state, parts_of)
                if fee is not None:
                    worst = fee if worst is None else max(worst, fee)
        except BillingError:  # not priced per request: settle prices it from the catalog
            return None
        return worst

    def _fee(
        self, call: Call, deployment: Deployment | None, state: _Period, parts_of: PartsOf
    ) -> Decimal | None:
        assert state.billed is not None
        usages = worst_usages(call, state.shape.per_token_type)
        subscription = state.billed.subscription.external_id
        groups = worst_event_groups(call, deployment, usages, parts_of, subscription, state.codes)
        if not groups:
            return None
        billed = state.billed
        return worst_request_fee(billed.plan, billed.metrics, groups.values(), state.running)

    def _templated_fee(
        self, call: Call, deployment: Deployment | None, state: _Period
    ) -> Decimal | None:
        """`_fee` with the buckets found once per kind of request (`template_key`): only the
        quantities are priced per request."""
        assert state.billed is not None
        key = template_key(call, deployment)
        found = state.templates.get(key)
        if found is None:
            usages = worst_usages(call, state.shape.per_token_type, unit=True)
            subscription = state.billed.subscription.external_id
            groups = worst_event_groups(call, deployment, usages, None, subscription, state.codes)
            billed = state.billed
            buckets = worst_buckets(billed.plan, billed.metrics, groups.values())
            found = (tuple(groups), buckets)
            if len(state.templates) >= TEMPLATES:
                state.templates.clear()
            state.templates[key] = found
        names, buckets = found
        if not names:
            return None
        quantities = [group_quantity(call, name) for name in names]
        return worst_fee_of_buckets(buckets, quantities, state.running)

    def settle(self, call: Call) -> Decimal | None:
        """The call's plan price, recorded into the period's running usage; None when no plan
        prices it (then cost x markup applies)."""
        state = self._current(call)
        if state is None or state.billed is None:
            return None
        events = self._events(call, state)
        if not events:
            return None
        try:
            priced = request_fee(state.billed.plan, state.billed.metrics, events, state.running)
        except BillingError as err:  # e.g. a weighted sum: it cannot be priced per event
            log.warning(
                "no plan price",
                extra={
                    "subscription": state.billed.subscription.external_id,
                    "reason": err.message,
                },
            )
            return None
        state.running = priced.running
        call.scratch[PRICED_BY] = state.billed.subscription.external_id
        return priced.amount


class PlanPriceStage:
    """Before the upstream call: make sure the request's plan and period usage are loaded."""

    name = "plan_price"
    settles = False

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
        if not self._prices.prices(call):  # the catalog's estimate is the whole of it
            return
        reachable = call.scratch.get(REACHABLE)
        if reachable is None:
            reachable = self._inner.reachable(call)
        worst = self._prices.estimate(call, reachable, self._parts_of(call))
        if worst is not None:  # hold enough for either way of pricing the call
            call.est_price = max(call.est_price or Decimal(0), worst)

    def _parts_of(self, call: Call) -> PartsOf:
        asked = service_tier_of(call.body)

        def parts_of(deployment: Deployment | None, usage: Usage) -> CostParts | None:
            if deployment is None:
                return None
            price = self._inner.price_for(deployment.catalog_model, call.created_at)
            if price is None:
                return None
            try:
                tier = billed_tier(price, deployment, asked)
                return cost_parts(usage, price, at=call.created_at, tier=tier)
            except FaregateError:
                return None

        return parts_of

    def settle(self, call: Call) -> None:
        self._inner.settle(call)
        price = self._prices.settle(call)
        if price is not None:
            call.price = price
