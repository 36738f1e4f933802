"""How a cache hit is billed: free hits emit no usage events, shared hits emit every
quantity scaled by the share; both record the saving on the request."""

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
from faregate.store.tables.metering import events, requests
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway

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
        rows = await conn.execute(
            select(events.c.code, events.c.properties).where(
                events.c.transaction_id.like(f"{request_id}:%")
            )
        )
        return [{"code": r.code, **r.properties} for r in rows]


async def _saved(gw: Running, request_id: str) -> int:
    async with gw.services.engine.connect() as conn:
        row = (
            await conn.execute(select(requests.c.saved_nanos).where(requests.c.id == request_id))
        ).one()
    return int(row.saved_nanos)


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
        if billing == "free":
            assert hit_events == []
        else:
            assert {
                e["type"]: Decimal(e["tokens"]) for e in hit_events if e["code"] == "tokens"
            } == {kind: n * share for kind, n in tokens.items()}
            assert all(e["cache_hit"] is True for e in hit_events)
            req = next(e for e in hit_events if e["code"] == "requests")
            assert Decimal(req["requests"]) == share
        price = Decimal(fresh["x-faregate-price"])
        assert Decimal(hit["x-faregate-price"]) == price * share
        saved = await _saved(gw, hit["x-faregate-request-id"])
        assert saved == to_nanos(price - price * share)
    finally:
        await gw.runner.cleanup()
