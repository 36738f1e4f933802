"""Prepaid wallets through the running gateway: the Lago client manages them, requests are
held before the upstream call and refused with 402 when the wallet cannot cover them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from lago_python_client.client import Client
from lago_python_client.models import Wallet, WalletTransaction

from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway
from tests.gateway.ledger_view import finishes

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
        Wallet(
            external_customer_id="acme",
            rate_amount="0.5",
            name="Prepaid",
            paid_credits="10",
            granted_credits="2.5",
            currency="USD",
        ),
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
        await assert_exactly_37_of_200([gw.url], gw.key, mock)
    finally:
        await gw.runner.cleanup()


async def ledger_of(url: str, wallet_id: str) -> list[dict[str, Any]]:
    """The wallet's ledger entries in the order they were stored, page by page (the route
    first writes the entries this gateway process still has pending)."""
    entries: list[dict[str, Any]] = []
    page: int | None = 1
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as s:
        while page is not None:
            params = {"page": page, "per_page": 1000}
            async with s.get(f"{url}/api/v1/wallets/{wallet_id}/ledger", params=params) as r:
                assert r.status == 200
                body = await r.json()
            entries += body["entries"]
            page = body["meta"]["next_page"]
    return entries


def lowest_available(entries: list[dict[str, Any]]) -> Decimal:
    """Replays the ledger in order: the lowest spendable balance it ever showed."""
    available, lowest = Decimal(0), Decimal(0)
    for entry in entries:
        available += Decimal(entry["available"])
        lowest = min(lowest, available)
    return lowest


async def assert_exactly_37_of_200(urls: list[str], key: str, mock: MockServer) -> None:
    """A wallet covering exactly 37 requests, 200 of them at once spread over `urls` (one
    gateway process each, or one for the embedded mode)."""
    status, headers, _ = await image(urls[0], key)  # no wallet yet: paid in arrears
    assert status == 200
    price = Decimal(headers["x-faregate-price"])
    assert price > 0
    client = Client(api_key=ADMIN_KEY, api_url=urls[0] + "/")
    wallet = await asyncio.to_thread(
        client.wallets.create,
        Wallet(external_customer_id="acme", rate_amount="1", paid_credits=str(price * 37)),
    )
    before = mock.stats.requests
    # 50 ms upstream: the holds of the 37 admitted requests really overlap.
    mock.config.deployments["openai"] = MockBehaviour(latency=0.05)
    running = True
    watched = asyncio.create_task(watch_ongoing(urls, wallet.lago_id, lambda: running))
    try:
        results = await asyncio.gather(*(image(urls[i % len(urls)], key) for i in range(200)))
    finally:
        running = False
        lowest_seen, readings = await watched
        del mock.config.deployments["openai"]
    assert readings >= 2 and lowest_seen >= 0  # never below zero while the requests ran
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 37 and statuses.count(402) == 163
    assert {r[2]["error"]["code"] for r in results if r[0] == 402} == {"insufficient_credits"}
    assert mock.stats.requests - before == 37  # refused requests never went upstream
    for url in urls:  # each process writes the entries it still has pending
        entries = await ledger_of(url, wallet.lago_id)
    kinds = [e["kind"] for e in entries]
    done = finishes(entries)  # a hold is stored on its own only if open at a flush
    assert kinds.count("credit") == 1 and len(done) == 37 and kinds.count("hold") <= 37
    assert {e["kind"] for e in done} == {"post"}  # a refused request left no entry
    # The spendable balance never went below zero, at any point of the ledger's history.
    assert lowest_available(entries) == 0
    assert sum((Decimal(e["consumed"]) for e in entries), Decimal(0)) == price * 37
    found = await asyncio.to_thread(client.wallets.find, wallet.lago_id)
    assert found.credits_balance == "0.00000" and found.balance_cents == 0
    assert found.ongoing_balance_cents == 0 and found.credits_ongoing_usage_balance == "0.00000"


async def watch_ongoing(
    urls: list[str], wallet_id: str, running: Callable[[], bool]
) -> tuple[int, int]:
    """Reads the wallet's ongoing balance from every process in turn while `running()`: the
    lowest `ongoing_balance_cents` seen and how many readings were taken."""
    lowest, readings = 10**18, 0
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as s:
        while running():
            url = urls[readings % len(urls)]
            async with s.get(f"{url}/api/v1/wallets/{wallet_id}") as r:
                wallet = (await r.json())["wallet"]
            lowest = min(lowest, int(wallet["ongoing_balance_cents"]))
            readings += 1
            await asyncio.sleep(0)
    return lowest, readings


class RecordingWebhooks:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def emit(self, webhook_type: str, object_type: str, obj: dict[str, Any]) -> None:
        self.sent.append((webhook_type, object_type, obj))

    def types(self) -> list[str]:
        return [t for t, _, _ in self.sent]


async def threshold_top_ups(client: Client, wallet_id: str) -> list[Any]:
    found = await asyncio.to_thread(client.wallet_transactions.find_all, wallet_id)
    return [t for t in found["wallet_transactions"] if t.source == "threshold"]


async def wait_for_top_ups(client: Client, wallet_id: str, count: int) -> list[Any]:
    """The top-up is made right after the request that crossed the threshold: it must be
    there within one second of that request's answer (call this right after it)."""
    loop = asyncio.get_running_loop()
    crossed = datetime.now(UTC)
    deadline = loop.time() + 1.0
    while True:
        made = await threshold_top_ups(client, wallet_id)
        if len(made) >= count or loop.time() > deadline:
            break
        await asyncio.sleep(0.02)
    assert len(made) >= count, "no threshold top-up within 1 s of the crossing request"
    landed = datetime.fromisoformat(made[-1].created_at.replace("Z", "+00:00"))
    landed = landed if landed.tzinfo else landed.replace(tzinfo=UTC)  # SQLite keeps no zone
    assert landed - crossed < timedelta(seconds=1)
    return made


@pytest.fixture(params=["sqlite", "postgres", "postgres+redis"])
async def any_book(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    mock: MockServer,
    redis_url: str,
    redis_prefix: str,
) -> AsyncIterator[Running]:
    """A gateway on each hold book: in process (SQLite), PostgreSQL's conditional update, and
    Redis's Lua script with the ledger in PostgreSQL."""
    if request.param == "sqlite":
        running = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", mock)
        yield running
        await running.runner.cleanup()
        return
    extra: dict[str, Any] = {}
    if request.param == "postgres+redis":
        extra = {"redis_url": redis_url, "server": {"redis_prefix": redis_prefix}}
    url = await create_pg_database()
    try:
        running = await start_gateway(tmp_path, url, mock, extra)
        yield running
        await running.runner.cleanup()
    finally:
        await drop_pg_database(url)


async def test_a_threshold_top_up_fires_once_per_crossing(any_book: Running) -> None:
    gateway = any_book
    hooks = RecordingWebhooks()
    gateway.services.wallets.service.webhooks = hooks
    price = await price_of_one_image(gateway)
    client = lago(gateway)
    wallet = await asyncio.to_thread(
        client.wallets.create,
        Wallet(
            external_customer_id="acme",
            rate_amount="1",
            paid_credits=str(price * 10),
            recurring_transaction_rules=[
                {
                    "trigger": "threshold",
                    "threshold_credits": str(price * 4),
                    "method": "fixed",
                    "paid_credits": str(price * 5),
                }
            ],
        ),
    )
    assert wallet.recurring_transaction_rules.__root__[0].trigger == "threshold"
    for _ in range(5):
        assert (await image(gateway.url, gateway.key))[0] == 200
    assert await threshold_top_ups(client, wallet.lago_id) == []  # 5 prices left: above
    assert (await image(gateway.url, gateway.key))[0] == 200  # 4 left: crossed
    made = await wait_for_top_ups(client, wallet.lago_id, 1)
    assert len(made) == 1 and Decimal(made[0].credit_amount) == price * 5
    for _ in range(4):  # 9, 8, 7, 6, 5 left: no new crossing
        assert (await image(gateway.url, gateway.key))[0] == 200
    assert len(await threshold_top_ups(client, wallet.lago_id)) == 1
    assert (await image(gateway.url, gateway.key))[0] == 200  # 4 left: crossed again
    assert len(await wait_for_top_ups(client, wallet.lago_id, 2)) == 2
    await asyncio.sleep(0.1)
    assert len(await threshold_top_ups(client, wallet.lago_id)) == 2
    created = [o for t, _, o in hooks.sent if t == "wallet_transaction.created"]
    assert [o["source"] for o in created] == ["manual", "threshold", "threshold"]


async def test_a_depleted_wallet_sends_its_webhook_once(gateway: Running) -> None:
    hooks = RecordingWebhooks()
    gateway.services.wallets.service.webhooks = hooks
    price = await price_of_one_image(gateway)
    client = lago(gateway)
    await asyncio.to_thread(
        client.wallets.create,
        Wallet(external_customer_id="acme", rate_amount="1", paid_credits=str(price * 2)),
    )
    statuses = [(await image(gateway.url, gateway.key))[0] for _ in range(4)]
    assert statuses == [200, 200, 402, 402]
    await asyncio.sleep(0.2)
    assert hooks.types().count("wallet.depleted_ongoing_balance") == 1
    # The wallet it carries includes the debit that emptied it (it showed the balance before).
    [wallet] = [o for t, _, o in hooks.sent if t == "wallet.depleted_ongoing_balance"]
    assert Decimal(wallet["credits_balance"]) == 0 and wallet["balance_cents"] == 0


async def test_a_credit_limit_holds_unpaid_usage_of_a_customer_without_wallet(
    gateway: Running,
) -> None:
    from faregate.auth import repository
    from faregate.money import to_nanos

    price = await price_of_one_image(gateway)  # no wallet, no limit: not held
    async with gateway.services.engine.begin() as conn:
        customer = await repository.customer_by_external_id(conn, "acme")
        assert customer is not None
        await repository.update_customer(
            conn, customer["id"], {"credit_limit_nanos": to_nanos(price * 2)}
        )
    # The gateway reads a customer's wallets again every second in the background, and
    # makes a request wait for the read once they are two seconds old: past that, the first
    # request is held on the new limit.
    await asyncio.sleep(2.1)
    statuses = [(await image(gateway.url, gateway.key))[0] for _ in range(3)]
    assert statuses == [200, 200, 402]
    listed = await asyncio.to_thread(
        lago(gateway).wallets.find_all, {"external_customer_id": "acme"}
    )
    [wallet] = listed["wallets"]
    assert wallet.code == "credit_limit"
    assert Decimal(wallet.credits_balance) == -2 * price  # unpaid usage, up to the limit


async def test_an_interval_top_up_is_made_once_per_interval(gateway: Running) -> None:
    from datetime import UTC, datetime, timedelta

    client = lago(gateway)
    started = datetime.now(UTC) - timedelta(days=8)
    wallet = await asyncio.to_thread(
        client.wallets.create,
        Wallet(
            external_customer_id="acme",
            rate_amount="1",
            recurring_transaction_rules=[
                {
                    "trigger": "interval",
                    "interval": "weekly",
                    "paid_credits": "7",
                    "started_at": started.isoformat(),
                }
            ],
        ),
    )
    for _ in range(3):  # every replica's loop may check; one top-up per interval
        await gateway.services.wallets.tick()
    found = await asyncio.to_thread(client.wallet_transactions.find_all, wallet.lago_id)
    made = [t for t in found["wallet_transactions"] if t.source == "interval"]
    assert [Decimal(t.credit_amount) for t in made] == [7]


async def test_wallets_and_their_transactions_list_page_by_page_with_lagos_meta(
    gateway: Running,
) -> None:
    client = lago(gateway)
    wallets = [
        await asyncio.to_thread(
            client.wallets.create,
            Wallet(external_customer_id="acme", rate_amount="1", paid_credits=str(i + 1)),
        )
        for i in range(3)
    ]
    page = await asyncio.to_thread(
        client.wallets.find_all, {"external_customer_id": "acme", "page": 2, "per_page": 2}
    )
    assert [w.lago_id for w in page["wallets"]] == [wallets[2].lago_id]
    assert page["meta"] == {
        "current_page": 2,
        "next_page": None,
        "prev_page": 1,
        "total_pages": 2,
        "total_count": 3,
    }
    first = await asyncio.to_thread(client.wallets.find_all, {"page": 1, "per_page": 2})
    assert [w.lago_id for w in first["wallets"]] == [w.lago_id for w in wallets[:2]]
    assert first["meta"]["next_page"] == 2 and first["meta"]["prev_page"] is None
    wallet_id = wallets[0].lago_id
    for credits in ("2", "3", "4"):
        await asyncio.to_thread(
            client.wallet_transactions.create,
            WalletTransaction(wallet_id=wallet_id, granted_credits=credits),
        )
    # Four transactions: the purchase at creation, then three grants, oldest first.
    listed = await asyncio.to_thread(
        client.wallet_transactions.find_all, wallet_id, {"page": 2, "per_page": 3}
    )
    assert [Decimal(t.credit_amount) for t in listed["wallet_transactions"]] == [4]
    assert listed["meta"]["total_count"] == 4 and listed["meta"]["total_pages"] == 2
    granted = await asyncio.to_thread(
        client.wallet_transactions.find_all,
        wallet_id,
        {"transaction_status": "granted", "per_page": 2},
    )
    assert [Decimal(t.credit_amount) for t in granted["wallet_transactions"]] == [2, 3]
    assert granted["meta"]["total_count"] == 3 and granted["meta"]["next_page"] == 2


async def test_one_wallet_transaction_is_found_by_its_id(gateway: Running) -> None:
    client = lago(gateway)
    wallet = await asyncio.to_thread(
        client.wallets.create,
        Wallet(external_customer_id="acme", rate_amount="0.5", paid_credits="10"),
    )
    [made] = (await asyncio.to_thread(client.wallet_transactions.find_all, wallet.lago_id))[
        "wallet_transactions"
    ]
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession() as s:
        url = f"{gateway.url}/api/v1/wallet_transactions/{made.lago_id}"
        async with s.get(url, headers=auth) as r:
            assert r.status == 200
            found = (await r.json())["wallet_transaction"]
        async with s.get(f"{gateway.url}/api/v1/wallet_transactions/nope", headers=auth) as r:
            assert r.status == 404
            assert (await r.json())["code"] == "wallet_transaction_not_found"
    assert found["lago_id"] == made.lago_id and found["lago_wallet_id"] == wallet.lago_id
    assert found["credit_amount"] == "10.00000" and found["amount"] == "5"
    assert found["transaction_status"] == "purchased" and found["status"] == "settled"
