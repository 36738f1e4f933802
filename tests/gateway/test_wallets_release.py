"""Every hold is finished exactly once, whatever ends the request: a provider error or the
request deadline releases it whole; a client that leaves before a non-streamed answer, or in
the middle of a stream, pays exactly its request record's price and the rest is released."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from faregate.money import from_nanos
from faregate.store.tables.metering import requests
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway
from tests.gateway.ledger_view import finish_of
from tests.gateway.test_wallets import lago

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {
    "model": "gpt-4o-mini",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "tell me a story"}],
}
TIMEOUT_S = 0.5


@pytest.fixture(params=["sqlite", "postgres"])
async def gw(
    request: pytest.FixtureRequest, tmp_path: Path, mock: MockServer
) -> AsyncIterator[Running]:
    """A gateway whose request deadline is half a second (the mock can be made slower)."""
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    running = await start_gateway(tmp_path, url, mock, {"server": {"request_timeout": TIMEOUT_S}})
    yield running
    await running.runner.cleanup()
    if postgres:
        await drop_pg_database(url)


async def _wallet(gw: Running, credits: str = "5") -> str:
    body = {"wallet": {"external_customer_id": "acme", "rate_amount": "1", "paid_credits": credits}}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{gw.url}/api/v1/wallets", json=body, headers=ADMIN) as r,
    ):
        assert r.status == 200
        return str((await r.json())["wallet"]["lago_id"])


async def _chat(gw: Running, body: dict[str, Any] = CHAT) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{gw.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {gw.key}"},
        ) as r,
    ):
        return r.status, await r.json()


async def _finished(gw: Running, wallet_id: str, holds: int = 1) -> list[dict[str, Any]]:
    """The ledger once `holds` holds are each finished by a post or a release."""
    entries: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            async with s.get(f"{gw.url}/api/v1/wallets/{wallet_id}/ledger", headers=ADMIN) as r:
                entries = (await r.json())["entries"]
            if sum(e["kind"] in ("post", "release") for e in entries) >= holds:
                return entries
            await asyncio.sleep(0.05)
    raise AssertionError(f"holds not finished: {entries}")


async def _assert_released_untouched(gw: Running, wallet_id: str, credits: str) -> None:
    release = finish_of(await _finished(gw, wallet_id))
    assert release["kind"] == "release" and Decimal(release["reserved"]) > 0
    assert Decimal(release["consumed"]) == 0
    found = await asyncio.to_thread(lago(gw).wallets.find, wallet_id)
    assert found.credits_balance == found.credits_ongoing_balance == f"{credits}.00000"
    assert found.credits_ongoing_usage_balance == "0.00000" and found.consumed_credits == "0.00000"


async def test_a_provider_error_releases_the_hold(gw: Running, mock: MockServer) -> None:
    wallet_id = await _wallet(gw)
    mock.config.deployments["openai"] = MockBehaviour(error_rate=1.0)
    status, body = await _chat(gw)
    assert status >= 500 and body["error"]["type"]
    assert mock.stats.requests >= 1  # the provider was called and failed
    await _assert_released_untouched(gw, wallet_id, "5")


async def test_a_request_past_its_deadline_releases_the_hold(gw: Running, mock: MockServer) -> None:
    wallet_id = await _wallet(gw)
    mock.config.deployments["openai"] = MockBehaviour(latency=TIMEOUT_S * 6)
    status, body = await _chat(gw)
    assert status == 504, body
    await _assert_released_untouched(gw, wallet_id, "5")


async def test_a_client_leaving_before_a_non_streamed_answer_pays_only_what_was_used(
    gw: Running, mock: MockServer
) -> None:
    wallet_id = await _wallet(gw)
    mock.config.deployments["openai"] = MockBehaviour(latency=TIMEOUT_S * 0.8)
    with pytest.raises(asyncio.TimeoutError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.1)) as s,
            s.post(
                f"{gw.url}/v1/chat/completions",
                json=CHAT,
                headers={"Authorization": f"Bearer {gw.key}"},
            ) as r,
        ):
            await r.read()
    # The upstream call was already made: the gateway lets it finish (the provider bills
    # it), records it, and the wallet pays exactly that request's price; the rest of the
    # hold goes back.
    post = finish_of(await _finished(gw, wallet_id))
    assert post["kind"] == "post"
    record = await _request_record(gw, post["hold_id"])
    price = from_nanos(int(record["price_nanos"]))
    assert record["output_tokens"] > 0 and price > 0
    assert Decimal(post["consumed"]) == price <= Decimal(post["reserved"])
    assert mock.stats.requests == 1
    found = await asyncio.to_thread(lago(gw).wallets.find, wallet_id)
    assert found.credits_ongoing_usage_balance == "0.00000"
    assert Decimal(found.credits_balance) == (5 - price).quantize(
        Decimal("0.00001"), rounding=ROUND_DOWN
    )


async def _request_record(gw: Running, request_id: str) -> dict[str, Any]:
    await gw.services.writer.flush()
    async with gw.services.engine.connect() as conn:
        row = (
            (await conn.execute(select(requests).where(requests.c.id == request_id)))
            .mappings()
            .one()
        )
    return dict(row)


@pytest.mark.parametrize("usage", [False, True], ids=["parsed", "relayed"])
async def test_a_client_leaving_mid_stream_pays_exactly_its_request_price(
    tmp_path: Path, mock: MockServer, usage: bool
) -> None:
    """Also when the client asked for usage, so the content events went to it unparsed
    (`Relayed`): their text is what the estimate counts."""
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock)
    try:
        wallet_id = await _wallet(gw)
        mock.config.deployments["openai"] = MockBehaviour(chunk_delay=0.05, output_tokens=200)
        body = {**CHAT, "stream": True, "max_tokens": 200}
        if usage:
            body["stream_options"] = {"include_usage": True}
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{gw.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {gw.key}"},
            ) as r,
        ):
            assert r.status == 200
            seen = 0
            while seen < 3:  # the role chunk and two words, then the client goes away
                seen += (await r.content.readline()).startswith(b"data: ")
        post = finish_of(await _finished(gw, wallet_id))
        assert post["kind"] == "post"
        record = await _request_record(gw, post["hold_id"])
        assert record["status"] == 499 and record["error_code"] == "client_disconnected"
        # The provider's report never arrived (the stream was cut): the usage is the text
        # the gateway relayed, marked estimated, and the wallet pays exactly its price
        # (test_wallets_bounds.py computes it on each wire).
        assert record["usage_estimated"] is True
        assert 0 < record["output_tokens"] < 200
        price = from_nanos(int(record["price_nanos"]))
        assert price > 0 and Decimal(post["consumed"]) == price <= Decimal(post["reserved"])
        found = await asyncio.to_thread(lago(gw).wallets.find, wallet_id)
        assert found.credits_ongoing_usage_balance == "0.00000"
        assert Decimal(found.consumed_credits) == price.quantize(
            Decimal("0.00001"), rounding=ROUND_DOWN
        )
    finally:
        await gw.runner.cleanup()
