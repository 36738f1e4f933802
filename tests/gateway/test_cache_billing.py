"""How a cache hit is billed: free hits emit no usage events, shared hits emit every
quantity scaled by the share; both leave a request record with the saving, which the spend
report sums."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from faregate.auth.service import KeyService
from faregate.mockprovider.server import MockServer
from faregate.money import to_nanos
from faregate.store.tables.metering import requests
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway
from tests.stored_events import events_of_request

BODY = {
    "model": "gpt-4o-mini",
    "temperature": 0,
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "bill me once"}],
}


async def _post(gw: Running, key: str) -> dict[str, str]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{gw.url}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
        ) as r,
    ):
        assert r.status == 200, await r.text()
        return dict(r.headers)


async def _billed_key(gw: Running) -> str:
    key, _ = await KeyService(gw.services.engine, ADMIN_KEY).create_key(
        name="billed", customer_external_id="acme", external_subscription_id="sub-1"
    )
    return key


async def _events_of(gw: Running, request_id: str) -> list[dict[str, Any]]:
    await gw.services.writer.flush()
    async with gw.services.engine.connect() as conn:
        rows = await events_of_request(conn, request_id)
        return [{"code": r["code"], **r["properties"]} for r in rows]


async def _record(gw: Running, request_id: str) -> Any:
    await gw.services.writer.flush()
    async with gw.services.engine.connect() as conn:
        query = select(requests).where(requests.c.id == request_id)
        return (await conn.execute(query)).mappings().one()


async def _spend_totals(gw: Running) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{gw.url}/api/v1/spend?by=key",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as r,
    ):
        assert r.status == 200, await r.text()
        return (await r.json())["totals"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("billing", "share"), [("free", Decimal(0)), ("share", Decimal("0.25"))], ids=["free", "share"]
)
async def test_a_cache_hit_is_billed_by_the_hit_policy(
    tmp_path: Path, mock: MockServer, billing: str, share: Decimal
) -> None:
    gw = await start_gateway(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        mock,
        {"cache": {"enabled": True, "hit_billing": billing, "share": str(share)}},
    )
    try:
        key = await _billed_key(gw)
        fresh = await _post(gw, key)
        hit = await _post(gw, key)
        assert hit["x-faregate-cache"] == "hit" and mock.stats.requests == 1
        fresh_events = await _events_of(gw, fresh["x-faregate-request-id"])
        hit_events = await _events_of(gw, hit["x-faregate-request-id"])
        tokens = {e["type"]: e["tokens"] for e in fresh_events if e["code"] == "tokens"}
        assert tokens and all(isinstance(n, int) for n in tokens.values())
        price = Decimal(fresh["x-faregate-price"])
        hit_price = price * share
        saved = price - hit_price
        if billing == "free":
            assert hit_events == []  # a plan has nothing to bill
        else:
            assert {
                e["type"]: Decimal(e["tokens"]) for e in hit_events if e["code"] == "tokens"
            } == {kind: n * share for kind, n in tokens.items()}
            assert all(e["cache_hit"] is True for e in hit_events)
            assert all(Decimal(e["saved"]) == saved for e in hit_events)
            assert all(Decimal(e["billed_share"]) == share for e in hit_events)
            req = next(e for e in hit_events if e["code"] == "requests")
            assert Decimal(req["requests"]) == share
            assert (Decimal(req["cost"]), Decimal(req["price"])) == (0, hit_price)
        assert Decimal(hit["x-faregate-price"]) == hit_price
        record = await _record(gw, hit["x-faregate-request-id"])
        assert record["cache_hit"] is True and record["status"] == 200
        assert (record["cost_nanos"], record["price_nanos"]) == (0, to_nanos(hit_price))
        assert record["saved_nanos"] == to_nanos(saved) > 0
        fresh_record = await _record(gw, fresh["x-faregate-request-id"])
        assert record["input_tokens"] == fresh_record["input_tokens"] > 0
        totals = await _spend_totals(gw)
        assert (totals["requests"], totals["cache_hits"]) == (2, 1)
        assert to_nanos(Decimal(totals["saved"])) == to_nanos(saved)  # stored in nanos
        assert to_nanos(Decimal(totals["price"])) == to_nanos(price) + to_nanos(hit_price)
    finally:
        await gw.runner.cleanup()
