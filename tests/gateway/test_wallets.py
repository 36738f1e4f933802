"""Prepaid wallets through the running gateway: the Lago client manages them, requests are
held before the upstream call and refused with 402 when the wallet cannot cover them."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from lago_python_client.client import Client
from lago_python_client.models import Wallet, WalletTransaction

from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway

IMAGE = {"model": "dall-e-3", "prompt": "a lighthouse", "n": 1, "size": "1024x1024"}


async def image(url: str, key: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}/v1/images/generations", json=IMAGE, headers={"Authorization": f"Bearer {key}"}
        ) as r,
    ):
        return r.status, dict(r.headers), await r.json()


def lago(gw: Running) -> Client:
    return Client(api_key=ADMIN_KEY, api_url=gw.url + "/")


async def price_of_one_image(gw: Running) -> Decimal:
    """A customer without a wallet pays in arrears: nothing is held, the price is reported."""
    status, headers, _ = await image(gw.url, gw.key)
    assert status == 200
    return Decimal(headers["x-faregate-price"])


async def test_the_lago_client_creates_tops_up_and_lists_wallets(gateway: Running) -> None:
    client = lago(gateway)
    wallet = await asyncio.to_thread(
        client.wallets.create,
        Wallet(external_customer_id="acme", rate_amount="0.5", name="Prepaid",
               paid_credits="10", granted_credits="2.5", currency="USD"),
    )
    assert wallet.credits_balance == "12.50000" and wallet.balance_cents == 625
    assert wallet.rate_amount == "0.5" and wallet.status == "active"
    made = await asyncio.to_thread(
        client.wallet_transactions.create,
        WalletTransaction(wallet_id=wallet.lago_id, paid_credits="4", voided_credits="1.5"),
    )
    statuses = sorted(t.transaction_status for t in made["wallet_transactions"])
    assert statuses == ["purchased", "voided"]
    found = await asyncio.to_thread(client.wallets.find, wallet.lago_id)
    assert found.credits_balance == "15.00000" and found.balance_cents == 750
    listed = await asyncio.to_thread(client.wallets.find_all, {"external_customer_id": "acme"})
    assert [w.lago_id for w in listed["wallets"]] == [wallet.lago_id]
    history = await asyncio.to_thread(client.wallet_transactions.find_all, wallet.lago_id)
    assert len(history["wallet_transactions"]) == 4
    updated = await asyncio.to_thread(
        client.wallets.update, Wallet(name="Renamed", priority=10), wallet.lago_id
    )
    assert updated.name == "Renamed" and updated.priority == 10
    terminated = await asyncio.to_thread(client.wallets.destroy, wallet.lago_id)
    assert terminated.status == "terminated"


async def test_200_concurrent_requests_against_a_wallet_covering_37(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock)
    try:
        await assert_exactly_37_of_200([gw], gw.key, mock)
    finally:
        await gw.runner.cleanup()


async def assert_exactly_37_of_200(gws: list[Running], key: str, mock: MockServer) -> None:
    price = await price_of_one_image(gws[0])
    assert price > 0
    client = lago(gws[0])
    wallet = await asyncio.to_thread(
        client.wallets.create,
        Wallet(external_customer_id="acme", rate_amount="1", paid_credits=str(price * 37)),
    )
    before = mock.stats.requests
    results = await asyncio.gather(
        *(image(gws[i % len(gws)].url, key) for i in range(200))
    )
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 37 and statuses.count(402) == 163
    refused = next(r for r in results if r[0] == 402)
    assert refused[2]["error"]["code"] == "insufficient_credits"
    assert mock.stats.requests - before == 37  # refused requests never went upstream
    for gw in gws:
        await gw.services.wallets.flush()
    found = await asyncio.to_thread(client.wallets.find, wallet.lago_id)
    assert found.credits_balance == "0.00000" and found.balance_cents == 0
    assert found.ongoing_balance_cents == 0 and found.credits_ongoing_usage_balance == "0.00000"
