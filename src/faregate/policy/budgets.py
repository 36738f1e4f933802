"""Spend budgets enforced before the upstream call: one atomic multi-scope reservation of
the worst-case estimate over every matching budget, settled with the real amount after.
Soft thresholds and refusals are reported once per period to an AlertSink."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from faregate.money import decimal_str, from_nanos, to_nanos
from faregate.policy.budget_defs import BudgetDef
from faregate.policy.durations import retry_after_header
from faregate.policy.errors import BudgetExceeded
from faregate.policy.periods import Period, period_at
from faregate.policy.subject import Subject
from faregate.store.counters.base import (
    MAX_NANOS,
    CounterStore,
    PlanHolds,
    ReserveResult,
    ReserveSpec,
)

log = logging.getLogger(__name__)

DEFAULT_HOLD_TTL_S = 900.0
RETENTION_S = 40 * 86400  # a period's counter stays readable this long after it ends
MATCH_CACHE_SIZE = 4096
# No budget matched: that cache entry holds at any time.
_START, _END = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


class AlertSink(Protocol):
    async def emit(self, kind: str, payload: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """One budget as it applies to one request: the value it counts and its period."""

    budget: BudgetDef
    value: str
    period: Period
    key: str = field(init=False)  # the budget's counter, before the period id
    scope: str = field(init=False)  # the counter of this period
    limit: int | None = field(init=False)  # what a hold may fill it to; None: soft

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"budget:{self.budget.id}:{self.value}")
        object.__setattr__(self, "scope", f"{self.key}:{self.period.id}")
        limit = self.budget.limit_nanos if self.budget.hard else None
        object.__setattr__(self, "limit", limit)

    def pick(self, cost: Decimal, price: Decimal) -> int:
        return to_nanos(cost if self.budget.basis == "cost" else price)

    def payload(self, spent_nanos: int) -> dict[str, Any]:
        b = self.budget
        return {
            "budget_id": b.id,
            "scope": b.scope,
            "value": self.value,
            "basis": b.basis,
            "period": b.period,
            "period_id": self.period.id,
            "period_end": self.period.end.isoformat(),
            "amount": decimal_str(b.amount),
            "spent": decimal_str(from_nanos(spent_nanos)),
        }


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    scope: BudgetScope
    spent: Decimal
    held: Decimal

    @property
    def remaining(self) -> Decimal:
        return max(self.scope.budget.amount - self.spent - self.held, Decimal(0))


def _kept_for(s: BudgetScope, now: datetime) -> float:
    """Seconds the scope's counter stays readable: its period, then RETENTION_S."""
    return s.period.seconds_left(now) + RETENTION_S


def _plain(scopes: tuple[BudgetScope, ...]) -> bool:
    """Whether a store's `hold_plan` may take these scopes: each counter once, every limit
    within what `reserve` accepts."""
    if len(scopes) > 1 and len({s.scope for s in scopes}) < len(scopes):
        return False
    return all(s.limit is None or s.limit <= MAX_NANOS for s in scopes)


def _crosses(marks: Sequence[int], before: int, after: int) -> bool:
    return any(before < mark <= after for mark in marks)


class BudgetHold:
    """The reservation of one request. Settle or release it exactly once when the call is
    over; doing either again changes nothing."""

    def __init__(
        self,
        budgets: Budgets,
        hold_id: str,
        scopes: tuple[BudgetScope, ...],
        quick: PlanHolds | None = None,
    ) -> None:
        self._budgets = budgets
        self.hold_id = hold_id
        self.scopes = scopes
        self._quick = quick  # the store that took this hold in one step (`hold_plan`)

    async def settle(self, actual_cost: Decimal, actual_price: Decimal) -> None:
        if not self.scopes:
            return
        if self._quick is not None:
            picked = [s.pick(actual_cost, actual_price) for s in self.scopes]
            if min(picked) >= 0:  # else `settle` refuses it, as before
                totals = self._quick.settle_plan(self.hold_id, picked)
                if totals is not None:
                    for s, amount, total in zip(self.scopes, picked, totals, strict=True):
                        if _crosses(s.budget.marks, total - amount, total):
                            await self._budgets.crossed(s, total - amount, total)
                    return
        amounts = {s.scope: s.pick(actual_cost, actual_price) for s in self.scopes}
        after = await self._budgets.store.settle(self.hold_id, amounts)
        for s in self.scopes:
            spent = after.get(s.scope)
            # Most settles cross no threshold: only those that do go on to the alerts.
            if spent is not None and _crosses(s.budget.marks, spent - amounts[s.scope], spent):
                await self._budgets.crossed(s, spent - amounts[s.scope], spent)

    async def release(self) -> None:
        if self.scopes:
            await self._budgets.store.release(self.hold_id)


class Budgets:
    def __init__(
        self,
        store: CounterStore,
        defs: Sequence[BudgetDef],
        *,
        alerts: AlertSink | None = None,
        clock: Callable[[], datetime] | None = None,
        hold_ttl_s: float = DEFAULT_HOLD_TTL_S,
    ) -> None:
        self.store = store
        self.defs = tuple(defs)
        self._alerts = alerts
        self._clock = clock or (lambda: datetime.now(UTC))
        self._hold_ttl_s = hold_ttl_s
        self._periods: dict[tuple[str, str], Period] = {}  # current period per (kind, zone)
        # (subject, model) -> its budget scopes and the instants between which they hold.
        self._matching: dict[
            tuple[Subject, str], tuple[tuple[BudgetScope, ...], datetime, datetime]
        ] = {}
        self._matching_defs = self.defs  # the definitions the cache was built from
        # An in-process store takes and settles a plain hold in one step (counters/base.py).
        self._quick = store if isinstance(store, PlanHolds) else None

    def _period(self, d: BudgetDef, now: datetime) -> Period:
        period = self._periods.get((d.period, d.timezone))
        if period is None or not period.start <= now < period.end:
            period = self._periods[(d.period, d.timezone)] = period_at(d.period, d.timezone, now)
        return period

    def matching(
        self, subject: Subject, model: str, now: datetime | None = None
    ) -> list[BudgetScope]:
        return list(self._scopes(subject, model, now or self._clock()))

    def _scopes(self, subject: Subject, model: str, now: datetime) -> tuple[BudgetScope, ...]:
        key = (subject, model)
        if self._matching_defs is not self.defs:  # definitions replaced: start afresh
            self._matching, self._matching_defs = {}, self.defs
        cached = self._matching.get(key)
        if cached is not None and cached[1] <= now < cached[2]:
            return cached[0]
        scopes = tuple(
            BudgetScope(d, value, self._period(d, now))
            for d in self.defs
            for value in d.values(subject, model)
        )
        if len(self._matching) >= MATCH_CACHE_SIZE:
            self._matching.clear()
        # Valid while every scope's period runs: from the latest start to the earliest end.
        starts = [s.period.start for s in scopes]
        ends = [s.period.end for s in scopes]
        self._matching[key] = (scopes, max(starts, default=_START), min(ends, default=_END))
        return scopes

    def _spec(self, s: BudgetScope, amount: int, now: datetime) -> ReserveSpec:
        return ReserveSpec(s.key, amount, s.limit, s.period.id, _kept_for(s, now))

    async def reserve(
        self,
        subject: Subject,
        model: str,
        estimate_cost: Decimal,
        estimate_price: Decimal,
        hold_id: str,
    ) -> BudgetHold:
        """Hold the worst-case estimate on every matching budget at once, or raise
        BudgetExceeded when a hard budget has no room for it (nothing is held then)."""
        now = self._clock()
        scopes = self._scopes(subject, model, now)
        if not scopes:
            return BudgetHold(self, hold_id, ())
        # At least one nano, so a request with no estimate still needs room on a full budget.
        amounts = [max(s.pick(estimate_cost, estimate_price), 1) for s in scopes]
        quick = self._quick
        if quick is not None and max(amounts) <= MAX_NANOS and _plain(scopes):
            held = quick.hold_plan(
                hold_id,
                [(s.scope, s.limit, _kept_for(s, now)) for s in scopes],
                amounts,
                self._hold_ttl_s,
            )
            if held:
                return BudgetHold(self, hold_id, scopes, quick)
            # Refused, or a hold id seen before: `reserve` judges it again and says why.
        specs = [self._spec(s, amount, now) for s, amount in zip(scopes, amounts, strict=True)]
        result = await self.store.reserve(specs, hold_id, self._hold_ttl_s)
        if not result.ok:
            failed = next(s for s in scopes if s.scope == result.failed_key)
            raise await self._refusal(failed, result, specs, now)
        return BudgetHold(self, hold_id, scopes)

    async def status(self, subject: Subject, model: str) -> list[BudgetStatus]:
        scopes = self.matching(subject, model)
        spent = await self.store.spent_many([s.scope for s in scopes])
        held = await asyncio.gather(*(self.store.held(s.scope) for s in scopes))
        return [
            BudgetStatus(s, from_nanos(sp), from_nanos(h))
            for s, sp, h in zip(scopes, spent, held, strict=True)
        ]

    async def _refusal(
        self, s: BudgetScope, result: ReserveResult, specs: Sequence[ReserveSpec], now: datetime
    ) -> BudgetExceeded:
        spent, held = result.spent.get(s.scope, 0), result.held.get(s.scope, 0)
        wanted = next(spec.amount_nanos for spec in specs if spec.scope == s.scope)
        if await self.store.incr(f"budget-alert:{s.scope}:exceeded", 1, RETENTION_S) == 1:
            await self._emit("budget.exceeded", s.payload(spent))
        b = s.budget
        return BudgetExceeded(
            f"Budget '{b.id}' for {b.scope} '{s.value}' has no room for this request: "
            f"{decimal_str(from_nanos(spent))} spent and {decimal_str(from_nanos(held))} "
            f"reserved of {decimal_str(b.amount)} ({b.basis}) this {b.period}; the request "
            f"may use up to {decimal_str(from_nanos(wanted))}. The budget resets at "
            f"{s.period.end.isoformat()}.",
            headers={"Retry-After": retry_after_header(s.period.seconds_left(now))},
        )

    async def crossed(self, s: BudgetScope, before: int, after: int) -> None:
        """Report every threshold this settle crossed. Spent only grows within a period
        and each settle adds atomically, so exactly one settle crosses each threshold."""
        for threshold, mark in zip(s.budget.thresholds, s.budget.marks, strict=True):
            if before < mark <= after:
                payload = s.payload(after) | {"threshold": decimal_str(threshold)}
                await self._emit("budget.threshold", payload)

    async def _emit(self, kind: str, payload: Mapping[str, Any]) -> None:
        if self._alerts is None:
            return
        try:
            await self._alerts.emit(kind, payload)
        except Exception:  # an alert channel failing must not fail the request
            log.exception("budget alert %s could not be delivered", kind)
