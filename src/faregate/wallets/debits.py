"""Real-time debits on a plan: a request is debited what it adds to its subscription's
period fees, fee(period usage after) - fee(period usage before) for every charge it touches
(`billing.request_fee`), so a period's debits add up to the invoice's charge lines exactly,
whatever the charge models (a package charge debits a whole package when a new one starts; a
volume charge can credit back).

The period-to-date raw aggregates are kept per subscription in this process, loaded once per
period from storage (rollups plus the usage writer's unwritten tail), and advanced in one
synchronous step per request, so no two requests price against the same `before`. With
several replicas each keeps its own running aggregates (see docs/wallets.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.billing import repository as billing_repo
from faregate.billing.aggregate import Aggregate
from faregate.billing.billed import Billed, load_billed
from faregate.billing.charges import BucketKey
from faregate.billing.errors import BillingError
from faregate.billing.periods import Period, subscription_period
from faregate.billing.request_fee import events_of_rows, request_fee
from faregate.gateway.call import Call
from faregate.metering.recorder import build_events
from faregate.usage import Usage

log = logging.getLogger("faregate.wallets")
Unflushed = Callable[[str], Sequence[dict[str, Any]]]


@dataclass
class _Running:
    billed: Billed
    period: Period
    running: dict[BucketKey, Aggregate]


class PlanDebits:
    def __init__(self, engine: AsyncEngine, unflushed: Unflushed | None = None) -> None:
        self._engine = engine
        # The usage writer's events not stored yet (set by the app once the writer exists).
        self.unflushed: Unflushed = unflushed or (lambda _s: ())
        self._state: dict[str, _Running] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _running(self, call: Call) -> _Running | None:
        subscription = call.principal.external_subscription_id
        if not subscription:
            return None
        state = self._state.get(subscription)
        if state is not None and state.period.contains(call.created_at):
            return state
        async with self._locks.setdefault(subscription, asyncio.Lock()):
            state = self._state.get(subscription)
            if state is not None and state.period.contains(call.created_at):
                return state
            state = await self._load(subscription, call)
            if state is not None:
                self._state[subscription] = state
            return state

    async def _load(self, subscription: str, call: Call) -> _Running | None:
        try:
            async with self._engine.connect() as conn:
                billed = await load_billed(conn, subscription)
                period = subscription_period(
                    billed.subscription, billed.plan.charges_interval, call.created_at
                )
                running = await billing_repo.period_aggregates(
                    conn,
                    billed.subscription,
                    billed.plan,
                    billed.metrics,
                    period,
                    rounded=False,
                    unflushed=self.unflushed(subscription),
                )
        except BillingError:
            log.warning("no plan to debit by", extra={"subscription": subscription})
            return None
        return _Running(billed, period, dict(running))

    def forget(self) -> None:
        """Plans or subscriptions changed: reload on next use."""
        self._state.clear()

    def _fee(self, state: _Running, call: Call) -> Any:
        subscription = state.billed.subscription
        rows = build_events(call, subscription.external_id, subscription.external_customer_id)
        return request_fee(
            state.billed.plan, state.billed.metrics, events_of_rows(rows), state.running
        )

    async def worst_case(self, call: Call) -> Decimal | None:
        """The debit of the request's worst-case usage against the running aggregates (an
        upper bound for every charge model whose fee grows with usage)."""
        state = await self._running(call)
        if state is None:
            return None
        worst = dataclasses.replace(call, usage=_worst_usage(call))
        try:
            return max(Decimal(0), self._fee(state, worst).amount)
        except BillingError:
            return None

    async def debit(self, call: Call) -> Decimal | None:
        state = await self._running(call)
        if state is None or call.usage is None:
            return None
        try:
            fee = self._fee(state, call)
        except BillingError:
            return None
        state.running = fee.running  # no await since the fee was priced: one step
        return Decimal(fee.amount)


def _worst_usage(call: Call) -> Usage:
    body = call.body
    if call.kind == "images":
        size = body.get("size") if isinstance(body.get("size"), str) else "1024x1024"
        width, _, height = str(size).partition("x")
        return Usage(
            images=int(body.get("n") or 1),
            image_width=int(width) if width.isdigit() else 0,
            image_height=int(height) if height.isdigit() else 0,
            image_quality=body.get("quality"),
            image_steps=body.get("steps"),
        )
    return Usage(input_tokens=call.est_input_tokens, output_tokens=call.est_output_tokens)
