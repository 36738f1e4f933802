"""Credit-threshold alerts: `wallets.alert_levels` makes a wallet whose balance falls to or
through a level send one signed `alert.triggered` webhook (`credit.threshold`) per level and
funding episode; a top-up starts a new episode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lago_python_client.models import Wallet, WalletTransaction

from faregate.mockprovider.server import MockServer
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import Running, start_gateway
from tests.gateway.test_wallets import image, lago
from tests.webhooks.receiver import Receiver

HMAC_KEY = "credit-alert-key"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


async def _alerts(receiver: Receiver, count: int) -> list[dict[str, Any]]:
    """The alerts received once `count` arrived and a duplicate would have had time to."""
    async with asyncio.timeout(10):
        while len(receiver.of_type("alert.triggered")) < count:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # the outbox polls every 0.02 s: a duplicate would show by now
    deliveries = receiver.of_type("alert.triggered")
    assert all(d.signed_by(HMAC_KEY) for d in deliveries)
    return sorted((d.json["alert"] for d in deliveries), key=lambda a: a["triggered_at"])


@pytest.fixture(params=["sqlite", "postgres+redis"])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The embedded mode, and replicas' mode (Redis book and Redis-deduplicated alerts)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", {}
        return
    url = await create_pg_database()
    yield url, {"redis_url": redis_url, "server": {"redis_prefix": redis_prefix}}
    await drop_pg_database(url)


async def test_draining_a_wallet_sends_one_signed_credit_threshold_alert_per_level(
    tmp_path: Path,
    mock: MockServer,
    receiver: Receiver,
    database: tuple[str, dict[str, Any]],
) -> None:
    url, store = database
    extra = {
        **store,
        "webhooks": {
            "hmac_key": HMAC_KEY,
            "endpoints": [receiver.url],
            "poll_seconds": 0.02,
            "retry_base_seconds": 0.02,
        },
        "wallets": {"alert_levels": ["2.5", 1]},
    }
    gw: Running = await start_gateway(tmp_path, url, mock, extra)
    try:
        status, headers, _ = await image(gw.url, gw.key)  # no wallet yet: paid in arrears
        assert status == 200
        price = Decimal(headers["x-faregate-price"])
        client = lago(gw)
        # One credit is worth one image: 4 credits pay 4 images.
        wallet = await asyncio.to_thread(
            client.wallets.create,
            Wallet(external_customer_id="acme", rate_amount=str(price), paid_credits="4"),
        )
        statuses = [(await image(gw.url, gw.key))[0] for _ in range(6)]
        assert statuses == [200, 200, 200, 200, 402, 402]
        alerts = await _alerts(receiver, 2)
        # 4 -> 3 -> 2 crossed 2.5; 2 -> 1 crossed 1; 1 -> 0 and the refusals cross nothing.
        assert sorted((a["alert_type"], a["threshold"], a["balance"]) for a in alerts) == [
            ("credit.threshold", "1", "1.00000"),
            ("credit.threshold", "2.5", "2.00000"),
        ]
        assert {a["wallet"]["lago_id"] for a in alerts} == {wallet.lago_id}
        assert {a["wallet"]["external_customer_id"] for a in alerts} == {"acme"}
        # A top-up is a new funding episode: the same level alerts again when crossed.
        await asyncio.to_thread(
            client.wallet_transactions.create,
            WalletTransaction(wallet_id=wallet.lago_id, paid_credits="3"),
        )
        for _ in range(2):  # 3 -> 2 -> 1
            assert (await image(gw.url, gw.key))[0] == 200
        alerts = await _alerts(receiver, 4)
        assert sorted(a["threshold"] for a in alerts) == ["1", "1", "2.5", "2.5"]
    finally:
        await gw.runner.cleanup()
