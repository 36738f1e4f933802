"""A wallet paying for plan-priced requests: the hold taken before the upstream call is the
most the plan can price the request at — charge filters on `provider`, `type` (reasoning),
image `size` x `quality` included — so the posted price never exceeds it, the balance never
goes below zero, and a wallet that cannot cover the worst case gets 402 before any upstream
call. A terminated subscription stops plan-pricing requests within a second."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from faregate.auth.service import KeyService
from faregate.mockprovider.server import MockServer
from faregate.store.db import create_engine
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway
from tests.gateway.ledger_view import finishes
from tests.gateway.test_wallets import ledger_of, lowest_available

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
REASONING_RATE = Decimal("0.01")  # per reasoning token served by `compat`
HD_TALL_RATE = Decimal("0.75")  # per 1024x1792 hd image


@pytest.fixture(params=["sqlite", "postgres"])
async def plan_gateway(
    request: pytest.FixtureRequest, tmp_path: Path, mock: MockServer
) -> AsyncIterator[Running]:
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    models = [
        {"name": "thinker", "deployments": [{"provider": "compat", "model": "o3-mini"}]},
        {
            "name": "dall-e-3",
            "kind": "images",
            "deployments": [{"provider": "openai", "model": "dall-e-3"}],
        },
    ]
    running = await start_gateway(
        tmp_path, url, mock, {"models": models, "billing": {"run_interval": 0}}
    )
    yield running
    await running.runner.cleanup()
    if postgres:
        await drop_pg_database(url)


async def admin(gw: Running, method: str, path: str, body: Any = None) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, f"{gw.url}{path}", json=body, headers=ADMIN) as r,
    ):
        data: dict[str, Any] = await r.json()
        assert r.status < 300, data
        return data


async def subscribe(gw: Running, plan: dict[str, Any], external_id: str = "sub_plan") -> None:
    await admin(gw, "POST", "/api/v1/plans", {"plan": plan})
    start = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    subscription = {
        "external_customer_id": "acme",
        "plan_code": plan["code"],
        "external_id": external_id,
        "billing_time": "calendar",
        "subscription_at": start,
    }
    await admin(gw, "POST", "/api/v1/subscriptions", {"subscription": subscription})


async def metric_id(gw: Running, code: str) -> str:
    found = await admin(gw, "GET", f"/api/v1/billable_metrics/{code}")
    return str(found["billable_metric"]["lago_id"])


async def reasoning_plan(gw: Running) -> dict[str, Any]:
    """Tokens are free except reasoning tokens served by the `compat` provider."""
    return {
        "name": "Thinking",
        "code": "thinking",
        "interval": "monthly",
        "amount_cents": 0,
        "amount_currency": "USD",
        "charges": [
            {
                "billable_metric_id": await metric_id(gw, "tokens"),
                "charge_model": "standard",
                "properties": {"amount": "0"},
                "filters": [
                    {
                        "values": {"provider": ["compat"], "type": ["reasoning"]},
                        "properties": {"amount": str(REASONING_RATE)},
                    }
                ],
            }
        ],
    }


async def images_plan(gw: Running) -> dict[str, Any]:
    """Images cost 0.05 each, except tall hd ones."""
    return {
        "name": "Pictures",
        "code": "pictures",
        "interval": "monthly",
        "amount_cents": 0,
        "amount_currency": "USD",
        "charges": [
            {
                "billable_metric_id": await metric_id(gw, "images"),
                "charge_model": "standard",
                "properties": {"amount": "0.05"},
                "filters": [
                    {
                        "values": {"size": ["1024x1792"], "quality": ["hd"]},
                        "properties": {"amount": str(HD_TALL_RATE)},
                    }
                ],
            }
        ],
    }


async def wallet(gw: Running, credits: str) -> str:
    body = {"wallet": {"external_customer_id": "acme", "rate_amount": "1", "paid_credits": credits}}
    made = await admin(gw, "POST", "/api/v1/wallets", body)
    return str(made["wallet"]["lago_id"])


async def post(gw: Running, path: str, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key or gw.key}"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{gw.url}{path}", json=body, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.json()


THINK = {"model": "thinker", "messages": [{"role": "user", "content": "why?"}], "max_tokens": 60}
TALL_HD = {
    "model": "dall-e-3",
    "prompt": "a lighthouse",
    "n": 2,
    "size": "1024x1792",
    "quality": "hd",
}


async def holds_and_posts(gw: Running, wallet_id: str) -> list[tuple[Decimal, Decimal]]:
    """(held, posted) per request, in credits, from the wallet's ledger."""
    entries = await ledger_of(gw.url, wallet_id)
    return [
        (Decimal(e["reserved"]), Decimal(e["consumed"]))
        for e in finishes(entries)
        if e["kind"] == "post"
    ]


async def test_a_reasoning_price_filtered_by_provider_is_held_in_full(
    plan_gateway: Running,
) -> None:
    gw = plan_gateway
    await subscribe(gw, await reasoning_plan(gw))
    # All 60 output tokens may be reasoning tokens on `compat`: that is the hold.
    worst = 60 * REASONING_RATE
    small = await wallet(gw, "0.05")  # less than the mock's 10 reasoning tokens will cost
    status, headers, body = await post(gw, "/v1/chat/completions", THINK)
    assert status == 402 and body["error"]["code"] == "insufficient_credits"
    assert Decimal(headers["x-faregate-hold"]) >= worst
    await admin(
        gw,
        "POST",
        "/api/v1/wallet_transactions",
        {"wallet_transaction": {"wallet_id": small, "paid_credits": "0.55"}},
    )
    await asyncio.sleep(1.1)  # top-ups made through the API reach the hold book within 1 s
    status, headers, body = await post(gw, "/v1/chat/completions", THINK)
    assert status == 200, body
    reasoning = body["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning * REASONING_RATE > Decimal("0.05")  # the first wallet would not cover it
    price = Decimal(headers["x-faregate-price"])
    assert price == reasoning * REASONING_RATE
    [(held, posted)] = await holds_and_posts(gw, small)
    assert posted == price and held >= worst >= posted
    entries = await ledger_of(gw.url, small)
    assert lowest_available(entries) >= 0


async def test_a_tall_hd_image_on_a_plan_is_held_at_its_filter_price(
    plan_gateway: Running,
) -> None:
    gw = plan_gateway
    await subscribe(gw, await images_plan(gw))
    price = 2 * HD_TALL_RATE
    short = await wallet(gw, str(price - Decimal("0.01")))
    before = gw.mock.stats.requests
    status, headers, body = await post(gw, "/v1/images/generations", TALL_HD)
    assert status == 402 and body["error"]["code"] == "insufficient_credits"
    assert Decimal(headers["x-faregate-hold"]) == price
    assert gw.mock.stats.requests == before  # refused before any upstream call
    await admin(
        gw,
        "POST",
        "/api/v1/wallet_transactions",
        {"wallet_transaction": {"wallet_id": short, "paid_credits": "0.01"}},
    )
    await asyncio.sleep(1.1)
    status, headers, _ = await post(gw, "/v1/images/generations", TALL_HD)
    assert status == 200
    assert Decimal(headers["x-faregate-price"]) == price
    [(held, posted)] = await holds_and_posts(gw, short)
    assert held == posted == price
    found = await admin(gw, "GET", f"/api/v1/wallets/{short}")
    assert Decimal(found["wallet"]["credits_balance"]) == 0
    assert lowest_available(await ledger_of(gw.url, short)) >= 0


async def test_a_terminated_subscription_stops_plan_prices_within_a_second(
    plan_gateway: Running,
) -> None:
    gw = plan_gateway
    await subscribe(gw, await images_plan(gw), external_id="sub_pics")
    engine = create_engine(gw.settings.database_url)
    try:  # a key bound to the subscription keeps naming it after it is terminated
        bound, _ = await KeyService(engine, ADMIN_KEY).create_key(
            name="bound", customer_external_id="acme", external_subscription_id="sub_pics"
        )
    finally:
        await engine.dispose()
    status, headers, _ = await post(gw, "/v1/images/generations", TALL_HD, key=bound)
    assert status == 200 and Decimal(headers["x-faregate-price"]) == 2 * HD_TALL_RATE
    await admin(gw, "DELETE", "/api/v1/subscriptions/sub_pics")
    await asyncio.sleep(1.1)
    status, headers, _ = await post(gw, "/v1/images/generations", TALL_HD, key=bound)
    assert status == 200
    # Priced from the catalog now: the provider cost (markup 1), not the plan's 1.50.
    assert Decimal(headers["x-faregate-price"]) == Decimal(headers["x-faregate-cost"])
    assert Decimal(headers["x-faregate-price"]) != 2 * HD_TALL_RATE


async def test_an_edited_plan_prices_requests_within_a_second(plan_gateway: Running) -> None:
    gw = plan_gateway
    plan = await images_plan(gw)
    await subscribe(gw, plan)
    status, headers, _ = await post(gw, "/v1/images/generations", TALL_HD)
    assert status == 200 and Decimal(headers["x-faregate-price"]) == 2 * HD_TALL_RATE
    charge = plan["charges"][0]
    dearer = {**charge, "filters": [{**charge["filters"][0], "properties": {"amount": "2"}}]}
    await admin(gw, "PUT", "/api/v1/plans/pictures", {"plan": {"charges": [dearer]}})
    await asyncio.sleep(1.1)
    short = await wallet(gw, "3.99")  # the new worst case is held: 2 x 2
    status, headers, body = await post(gw, "/v1/images/generations", TALL_HD)
    assert status == 402 and body["error"]["code"] == "insufficient_credits"
    assert Decimal(headers["x-faregate-hold"]) == 4
    await admin(
        gw,
        "POST",
        "/api/v1/wallet_transactions",
        {"wallet_transaction": {"wallet_id": short, "paid_credits": "0.01"}},
    )
    await asyncio.sleep(1.1)
    status, headers, _ = await post(gw, "/v1/images/generations", TALL_HD)
    assert status == 200 and Decimal(headers["x-faregate-price"]) == 4
    found = await admin(gw, "GET", f"/api/v1/wallets/{short}")
    assert Decimal(found["wallet"]["credits_balance"]) == 0
