"""A subscription's plan check under load: from half of CHECK_S it runs in the background
while requests go on with the state they find; past CHECK_S a request waits for it;
requests share one check."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from faregate.auth.principal import Principal
from faregate.gateway.call import Call
from faregate.gateway.plan_pricing import CHECK_S, PlanPrices, _Period

Fixture = tuple[PlanPrices, list[str], asyncio.Event]


def _call() -> Call:
    principal = Principal(key_id="k", key_prefix="p", external_subscription_id="sub")
    return Call(request_id="r", principal=principal, kind="chat", model="m", body={})


def _gated(prices: PlanPrices, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    """`prices` with its check replaced by one that reads no database and returns once the
    gate opens; the list records each check's subscription."""
    checks: list[str] = []
    gate = asyncio.Event()

    async def check(subscription: str, call: Call) -> None:
        """The subscription read again and found unchanged, once the gate opens."""
        checks.append(subscription)
        started = time.monotonic()
        await gate.wait()
        prices._state[subscription].checked_at = started

    monkeypatch.setattr(prices, "_refresh", check)
    return prices, checks, gate


@pytest.fixture
def plan(monkeypatch: pytest.MonkeyPatch) -> Fixture:
    return _gated(PlanPrices(cast(Any, None), "USD"), monkeypatch)


async def test_past_refresh_s_the_check_runs_while_requests_go_on(plan: Fixture) -> None:
    prices, checks, gate = plan
    prices._state["sub"] = _Period(None, checked_at=time.monotonic())
    await prices.prepare(_call())
    assert checks == []  # fresh: no check at all
    prices._state["sub"].checked_at -= CHECK_S / 2 + 0.1
    await asyncio.wait_for(asyncio.gather(*(prices.prepare(_call()) for _ in range(20))), 10)
    assert checks == ["sub"]  # one check, and nobody waited for it
    gate.set()
    await asyncio.gather(*list(prices._loading.values()))
    assert not prices._loading
    assert time.monotonic() - prices._state["sub"].checked_at < CHECK_S / 2


async def test_past_check_s_a_request_waits_for_the_check(plan: Fixture) -> None:
    prices, checks, gate = plan
    prices._state["sub"] = _Period(None, checked_at=time.monotonic() - CHECK_S - 0.1)
    waiting = [asyncio.create_task(prices.prepare(_call())) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiting)  # a state past CHECK_S is never used
    assert checks == ["sub"]  # shared
    gate.set()
    await asyncio.gather(*waiting)


def test_a_new_subscription_taking_an_external_id_is_priced_afresh() -> None:
    """A terminated subscription's external_id taken again by a new one within a check: the
    same status, plan and dates, but another subscription (its own period and usage)."""
    from faregate.gateway.plan_pricing import _fingerprint

    plan = {"id": "plan", "definition": {"code": "pro"}}
    old = {"id": "old", "status": "active", "plan_code": "pro"}
    assert _fingerprint(({**old, "id": "new"}, plan)) != _fingerprint((old, plan))


async def test_check_s_sets_when_the_check_runs_and_when_a_request_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`billing.plan_check_s`: the state is used as loaded for half of it, checked in the
    background from then, and a request waits for the check only past it."""
    prices, checks, gate = _gated(PlanPrices(cast(Any, None), "USD", check_s=60.0), monkeypatch)
    prices._state["sub"] = _Period(None, checked_at=time.monotonic() - CHECK_S - 20)
    await prices.prepare(_call())
    assert checks == []  # past the default, well within 60 s
    prices._state["sub"].checked_at -= 10  # 31 s old: past half of 60 s
    await asyncio.wait_for(prices.prepare(_call()), 10)
    assert checks == ["sub"]  # in the background: the request did not wait
    gate.set()
    await prices._loading["sub"]
    prices._state["sub"].checked_at -= 61
    gate.clear()
    waiting = asyncio.create_task(prices.prepare(_call()))
    await asyncio.sleep(0.05)
    assert not waiting.done() and checks == ["sub", "sub"]  # past check_s, it waits
    gate.set()
    await asyncio.wait_for(waiting, 10)
