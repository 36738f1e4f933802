"""A wallet's `last_consumed_credit_at` is when a request last consumed its credits, on every
hold book, in the API and in the wallet webhooks' payloads (it was always null)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from lago_python_client.models import Wallet, WalletTransaction

from tests.gateway import test_wallets
from tests.gateway.conftest import Running
from tests.gateway.test_wallets import RecordingWebhooks, image, lago, price_of_one_image

any_book = test_wallets.any_book  # a gateway on each hold book (fixture)

SLACK = timedelta(milliseconds=5)  # a stored time may be rounded to the microsecond


def _time(value: str | None) -> datetime:
    assert value is not None and value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_last_consumed_credit_at_is_the_last_request_that_consumed_credits(
    any_book: Running,
) -> None:
    gateway = any_book
    price = await price_of_one_image(gateway)
    client = lago(gateway)
    wallet = await asyncio.to_thread(
        client.wallets.create,
        Wallet(external_customer_id="acme", rate_amount="1", paid_credits=str(price * 5)),
    )
    assert wallet.last_consumed_credit_at is None  # nothing consumed yet

    before = datetime.now(UTC)
    assert (await image(gateway.url, gateway.key))[0] == 200
    after = datetime.now(UTC)
    found = await asyncio.to_thread(client.wallets.find, wallet.lago_id)
    first = _time(found.last_consumed_credit_at)
    assert before - SLACK <= first <= after + SLACK

    await asyncio.sleep(0.05)
    assert (await image(gateway.url, gateway.key))[0] == 200
    found = await asyncio.to_thread(client.wallets.find, wallet.lago_id)
    second = _time(found.last_consumed_credit_at)
    assert second > first

    # A top-up consumes nothing: the time stays.
    await asyncio.to_thread(
        client.wallet_transactions.create,
        WalletTransaction(wallet_id=wallet.lago_id, granted_credits="1"),
    )
    listed = await asyncio.to_thread(client.wallets.find_all, {"external_customer_id": "acme"})
    [same] = listed["wallets"]
    assert _time(same.last_consumed_credit_at) == second


async def test_wallet_webhooks_carry_last_consumed_credit_at(any_book: Running) -> None:
    gateway = any_book
    hooks = RecordingWebhooks()
    gateway.services.wallets.service.webhooks = hooks
    price = await price_of_one_image(gateway)
    client = lago(gateway)
    wallet = await asyncio.to_thread(
        client.wallets.create,
        Wallet(external_customer_id="acme", rate_amount="1", paid_credits=str(price * 2)),
    )
    before = datetime.now(UTC)
    statuses = [(await image(gateway.url, gateway.key))[0] for _ in range(3)]
    assert statuses == [200, 200, 402]
    await asyncio.sleep(0.2)
    await asyncio.to_thread(client.wallets.update, Wallet(name="Renamed"), wallet.lago_id)

    sent = {t: o for t, _, o in hooks.sent if t.startswith("wallet.")}
    assert sent["wallet.created"]["last_consumed_credit_at"] is None
    depleted = _time(sent["wallet.depleted_ongoing_balance"]["last_consumed_credit_at"])
    assert depleted >= before - SLACK
    assert _time(sent["wallet.updated"]["last_consumed_credit_at"]) == depleted
