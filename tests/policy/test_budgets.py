"""Budgets: atomic multi-scope reservations, exact settlement, periods in local time,
thresholds reported once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faregate.config import ConfigError
from faregate.money import from_nanos
from faregate.policy import BudgetExceeded, Budgets, Subject, parse_budgets
from faregate.store.counters import CounterStore, MemoryCounterStore
from faregate.store.counters.base import HoldReused

ALICE = Subject(key_id="k1", team_id="design", customer_id="acme", tags=("batch",))
D = Decimal


class Alerts:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, kind: str, payload: Mapping[str, Any]) -> None:
        self.events.append((kind, dict(payload)))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def budget(**overrides: Any) -> dict[str, Any]:
    spec = {"id": "b", "scope": "team", "match": "design", "amount": "1.00", "period": "month"}
    return spec | overrides


def budgets(store: CounterStore, *specs: dict[str, Any], **kwargs: Any) -> Budgets:
    return Budgets(store, parse_budgets(list(specs)), **kwargs)


async def test_concurrent_requests_never_settle_past_the_budget(store: CounterStore) -> None:
    b = budgets(store, budget())
    rng = random.Random(11)
    estimate = D("0.03")

    async def request(i: int) -> bool:
        try:
            hold = await b.reserve(ALICE, "m", estimate, estimate * 2, f"r{i}")
        except BudgetExceeded:
            return False
        await asyncio.sleep(rng.random() / 100)
        await hold.settle(estimate * D(rng.randint(50, 100)) / 100, D(0))
        return True

    admitted = sum(await asyncio.gather(*(request(i) for i in range(100))))
    status = (await b.status(ALICE, "m"))[0]
    assert status.spent <= D("1.00")
    assert status.held == 0
    assert admitted >= 33  # at least every estimate that fits outright


async def test_a_full_budget_refuses_with_429_and_reports_once(store: CounterStore) -> None:
    alerts = Alerts()
    b = budgets(store, budget(), alerts=alerts)
    hold = await b.reserve(ALICE, "m", D("0.60"), D(0), "h1")
    await hold.settle(D("0.60"), D(0))
    for i in range(3):
        with pytest.raises(BudgetExceeded) as refused:
            await b.reserve(ALICE, "m", D("0.50"), D(0), f"h{i + 2}")
    error = refused.value
    assert (error.status, error.code, error.type) == (429, "budget_exceeded", "insufficient_quota")
    assert int(error.headers["Retry-After"]) > 0
    assert "0.6 spent" in error.message and "up to 0.5" in error.message
    assert [kind for kind, _ in alerts.events] == ["budget.exceeded"]
    await b.reserve(ALICE, "m", D("0.40"), D(0), "fits")


async def test_a_request_without_an_estimate_still_needs_room(store: CounterStore) -> None:
    b = budgets(store, budget())
    await (await b.reserve(ALICE, "m", D("1"), D(0), "h1")).settle(D("1"), D(0))
    with pytest.raises(BudgetExceeded):
        await b.reserve(ALICE, "m", D(0), D(0), "h2")


async def test_one_full_scope_holds_nothing_on_the_others(store: CounterStore) -> None:
    b = budgets(
        store,
        budget(id="team", amount="10"),
        budget(id="key", scope="key", match="*", amount="1"),
    )
    await b.reserve(ALICE, "m", D("0.90"), D(0), "h1")
    with pytest.raises(BudgetExceeded) as refused:
        await b.reserve(ALICE, "m", D("0.20"), D(0), "h2")
    assert "'key'" in refused.value.message
    team = next(s for s in await b.status(ALICE, "m") if s.scope.budget.id == "team")
    assert team.held == D("0.90")


async def test_basis_chooses_cost_or_price(store: CounterStore) -> None:
    b = budgets(store, budget(id="cost", amount="5"), budget(id="price", basis="price", amount="5"))
    hold = await b.reserve(ALICE, "m", D("0.10"), D("0.25"), "h1")
    await hold.settle(D("0.07"), D("0.21"))
    spent = {s.scope.budget.id: s.spent for s in await b.status(ALICE, "m")}
    assert spent == {"cost": D("0.07"), "price": D("0.21")}


async def test_settle_and_release_are_idempotent(store: CounterStore) -> None:
    b = budgets(store, budget())
    hold = await b.reserve(ALICE, "m", D("0.50"), D(0), "h1")
    await hold.settle(D("0.30"), D(0))
    await hold.settle(D("0.30"), D(0))
    await hold.release()
    other = await b.reserve(ALICE, "m", D("0.50"), D(0), "h2")
    await other.release()
    await other.release()
    [status] = await b.status(ALICE, "m")
    assert (status.spent, status.held, status.remaining) == (D("0.3"), 0, D("0.7"))


async def test_thresholds_fire_once_each_even_under_concurrency(store: CounterStore) -> None:
    alerts = Alerts()
    b = budgets(store, budget(amount="1", thresholds=[0.5, 0.8, 1.0], hard=False), alerts=alerts)

    async def request(i: int) -> None:
        hold = await b.reserve(ALICE, "m", D("0.05"), D(0), f"h{i}")
        await hold.settle(D("0.05"), D(0))

    await asyncio.gather(*(request(i) for i in range(30)))  # $1.50 on a soft $1 budget
    crossed = [p["threshold"] for kind, p in alerts.events if kind == "budget.threshold"]
    assert sorted(crossed) == ["0.5", "0.8", "1"]
    assert all(p["budget_id"] == "b" and p["value"] == "design" for _, p in alerts.events)


async def test_a_single_settle_can_cross_several_thresholds(store: CounterStore) -> None:
    alerts = Alerts()
    b = budgets(store, budget(amount="10", thresholds=[0.5, 0.8]), alerts=alerts)
    hold = await b.reserve(ALICE, "m", D("9"), D(0), "h1")
    await hold.settle(D("8.5"), D(0))
    assert [p["threshold"] for _, p in alerts.events] == ["0.5", "0.8"]
    assert alerts.events[0][1]["spent"] == "8.5"


async def test_the_period_rolls_over_at_local_midnight(store: CounterStore) -> None:
    zone = ZoneInfo("America/Los_Angeles")
    clock = Clock(datetime(2026, 11, 3, 23, 59, tzinfo=zone).astimezone(UTC))
    b = budgets(store, budget(period="day", timezone="America/Los_Angeles"), clock=clock)
    await (await b.reserve(ALICE, "m", D("1"), D(0), "h1")).settle(D("1"), D(0))
    with pytest.raises(BudgetExceeded) as refused:
        await b.reserve(ALICE, "m", D("0.01"), D(0), "h2")
    assert refused.value.headers["Retry-After"] == "60"
    clock.now += timedelta(seconds=61)  # 00:00:01 in Los Angeles, 08:00:01 UTC
    hold = await b.reserve(ALICE, "m", D("0.01"), D(0), "h3")
    assert hold.scopes[0].period.id == "2026-11-04"


async def test_utc_midnight_does_not_roll_a_local_period(store: CounterStore) -> None:
    clock = Clock(datetime(2026, 11, 3, 23, 59, tzinfo=UTC))  # 15:59 in Los Angeles
    b = budgets(store, budget(period="day", timezone="America/Los_Angeles"), clock=clock)
    await (await b.reserve(ALICE, "m", D("1"), D(0), "h1")).settle(D("1"), D(0))
    clock.now += timedelta(minutes=2)
    with pytest.raises(BudgetExceeded):
        await b.reserve(ALICE, "m", D("0.01"), D(0), "h2")


async def test_wildcard_budgets_count_each_value_separately(store: CounterStore) -> None:
    b = budgets(store, budget(match="*", amount="1"), budget(id="tag", scope="tag", amount="5"))
    await b.reserve(ALICE, "m", D("1"), D(0), "h1")
    hold = await b.reserve(Subject(team_id="other"), "m", D("1"), D(0), "h2")
    assert [s.value for s in hold.scopes] == ["other"]
    none = await b.reserve(Subject(key_id="lonely"), "m", D("100"), D(0), "h3")
    assert none.scopes == ()
    await none.settle(D("100"), D(0))


async def test_a_failing_alert_sink_does_not_fail_the_request(store: CounterStore) -> None:
    class Broken:
        async def emit(self, kind: str, payload: Mapping[str, Any]) -> None:
            raise RuntimeError("webhook down")

    b = budgets(store, budget(thresholds=[0.5]), alerts=Broken())
    await (await b.reserve(ALICE, "m", D("0.6"), D(0), "h1")).settle(D("0.6"), D(0))


async def test_settled_amounts_are_exact_nanos(store: CounterStore) -> None:
    b = budgets(store, budget(amount="1000"))
    for i in range(3):
        await (await b.reserve(ALICE, "m", D("0.1"), D(0), f"h{i}")).settle(D("0.1"), D(0))
    [status] = await b.status(ALICE, "m")
    assert status.spent == D("0.3") and from_nanos(1) == D("1e-9")


@pytest.mark.parametrize(
    "spec",
    [
        budget(scope="planet"),
        budget(basis="vibes"),
        budget(period="fortnight"),
        budget(amount="0"),
        budget(amount="lots"),
        budget(timezone="Mars/Olympus"),
        budget(thresholds=[0, 0.5]),
        {"scope": "team", "amount": "1"},
    ],
)
def test_bad_budgets_are_config_errors(spec: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_budgets([spec])


def test_budget_ids_are_unique() -> None:
    with pytest.raises(ConfigError):
        parse_budgets([budget(), budget()])


async def test_thresholds_fire_again_in_the_next_period(store: CounterStore) -> None:
    clock = Clock(datetime(2026, 11, 3, 12, 0, tzinfo=UTC))
    alerts = Alerts()
    b = budgets(store, budget(period="day", thresholds=[0.5]), alerts=alerts, clock=clock)
    await (await b.reserve(ALICE, "m", D("0.6"), D(0), "h1")).settle(D("0.6"), D(0))
    await (await b.reserve(ALICE, "m", D("0.1"), D(0), "h2")).settle(D("0.1"), D(0))
    clock.now += timedelta(days=1)  # a new day: spend starts from zero without a restart
    await (await b.reserve(ALICE, "m", D("0.9"), D(0), "h3")).settle(D("0.9"), D(0))
    periods = [p["period_id"] for kind, p in alerts.events if kind == "budget.threshold"]
    assert periods == ["2026-11-03", "2026-11-04"]


# The in-process store takes and settles a plain hold in one step (`hold_plan`,
# `settle_plan`); anything else goes to `reserve` and `settle`. Both ways must judge,
# alert and leave the buckets alike.
_CENTS = st.integers(0, 120).map(lambda c: D(c) / 100)
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), _CENTS, st.booleans()),
        st.tuples(st.just("settle"), st.integers(0, 30), _CENTS),
        st.tuples(st.just("release"), st.integers(0, 30), st.none()),
        st.tuples(st.just("wait"), st.integers(0, 400), st.none()),
    ),
    max_size=50,
)


async def _replay(quick: bool, steps: list[tuple[str, Any, Any]]) -> list[Any]:
    now = [1_800_000_000.0]
    store = MemoryCounterStore(clock=lambda: now[0])
    alerts = Alerts()
    b = budgets(
        store,
        budget(amount="1.00", thresholds=[0.5, 0.9]),
        budget(id="c", scope="customer", match="*", basis="price", amount="0.70", hard=False),
        alerts=alerts,
        clock=lambda: datetime.fromtimestamp(now[0], UTC),
        hold_ttl_s=120,
    )
    if not quick:
        b._quick = None
    seen: list[Any] = []
    holds: list[Any] = []
    for i, (what, a, c) in enumerate(steps):
        if what == "reserve":
            try:
                holds.append(await b.reserve(ALICE, "m", a, a * 2, f"r{i % 5 if c else i}"))
                seen.append("held")
            except BudgetExceeded as refused:
                seen.append(refused.message)
            except HoldReused as reused:
                seen.append(str(reused))
        elif what == "settle" and holds:
            await holds[a % len(holds)].settle(c, c * 2)
        elif what == "release" and holds:
            await holds[a % len(holds)].release()
        else:
            now[0] += a
            seen.append(await store.sweep_expired())
        book = store._holds
        seen.append(
            (
                {k: (v.spent, v.held) for k, v in book._buckets.items()},
                {k: (h.state, h.scopes) for k, h in book._holds.items()},
                dict(book._finished),
                list(alerts.events),
            )
        )
    return seen


@settings(max_examples=200, deadline=None)
@given(_STEPS)
def test_a_hold_taken_in_one_step_is_judged_as_reserve_judges_it(
    steps: list[tuple[str, Any, Any]],
) -> None:
    assert asyncio.run(_replay(True, steps)) == asyncio.run(_replay(False, steps))
