"""Which wallet pays, and when a wallet or a rule stops applying: requests fall through to the
next wallet by priority, an expired wallet is terminated, threshold rules apply only between
their `started_at` and `expiration_at`; the ledger exports as CSV; a credit limit set through
the admin API holds unpaid usage."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
from lago_python_client.models import Wallet

from faregate.api.wallets import LEDGER_COLUMNS
from tests.gateway.conftest import ADMIN_KEY, Running
from tests.gateway.ledger_view import finishes
from tests.gateway.test_wallets import (
    RecordingWebhooks,
    image,
    lago,
    price_of_one_image,
    threshold_top_ups,
    wait_for_top_ups,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def _create(gw: Running, **fields: Any) -> Any:
    wallet = Wallet(external_customer_id="acme", rate_amount="1", **fields)
    return await asyncio.to_thread(lago(gw).wallets.create, wallet)


async def _find(gw: Running, wallet_id: str) -> Any:
    await gw.services.wallets.flush()
    return await asyncio.to_thread(lago(gw).wallets.find, wallet_id)


async def _ledger(gw: Running, wallet_id: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{gw.url}/api/v1/wallets/{wallet_id}/ledger", headers=ADMIN) as r,
    ):
        assert r.status == 200
        entries: list[dict[str, Any]] = (await r.json())["entries"]
        return entries


async def test_a_request_the_first_wallet_cannot_cover_is_held_on_the_next_by_priority(
    gateway: Running,
) -> None:
    price = await price_of_one_image(gateway)
    # Created first, so older, but priority 2: used after the priority-1 wallet.
    second = await _create(gateway, paid_credits=str(price * 2), priority=2)
    first = await _create(gateway, paid_credits=str(price), priority=1)
    statuses = [(await image(gateway.url, gateway.key))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 402]
    a, b = await _find(gateway, first.lago_id), await _find(gateway, second.lago_id)
    assert Decimal(a.consumed_credits) == price and a.credits_balance == "0.00000"
    assert Decimal(b.consumed_credits) == 2 * price and b.credits_balance == "0.00000"
    # Each request was held on one wallet only: the first one in order that covered it.
    a_holds = finishes(await _ledger(gateway, first.lago_id))
    b_holds = finishes(await _ledger(gateway, second.lago_id))
    assert len(a_holds) == 1 and len(b_holds) == 2
    assert not {e["hold_id"] for e in a_holds} & {e["hold_id"] for e in b_holds}


async def test_an_expired_wallet_is_terminated_and_the_next_wallet_pays(gateway: Running) -> None:
    hooks = RecordingWebhooks()
    gateway.services.wallets.service.webhooks = hooks
    price = await price_of_one_image(gateway)
    first = await _create(gateway, paid_credits=str(price * 5), priority=1)
    second = await _create(gateway, paid_credits=str(price * 5), priority=2)
    assert (await image(gateway.url, gateway.key))[0] == 200
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    await asyncio.to_thread(lago(gateway).wallets.update, Wallet(expiration_at=past), first.lago_id)
    assert (await image(gateway.url, gateway.key))[0] == 200
    expired = await _find(gateway, first.lago_id)
    assert expired.status == "terminated" and expired.terminated_at is not None
    assert Decimal(expired.consumed_credits) == price  # only the request before it expired
    assert Decimal((await _find(gateway, second.lago_id)).consumed_credits) == price
    await gateway.services.wallets.tick()  # the loop sees it terminated: nothing more
    terminated = [o for t, _, o in hooks.sent if t == "wallet.terminated"]
    assert [o["lago_id"] for o in terminated] == [first.lago_id]
    assert terminated[0]["status"] == "terminated"


async def test_the_background_loop_terminates_a_wallet_whose_expiration_passed(
    gateway: Running,
) -> None:
    # Room for the creation and a tick on a loaded machine before the expiration passes.
    soon = datetime.now(UTC) + timedelta(seconds=2)
    wallet = await _create(gateway, paid_credits="3", expiration_at=soon.isoformat())
    await gateway.services.wallets.tick()
    assert (await _find(gateway, wallet.lago_id)).status == "active"
    await asyncio.sleep((soon - datetime.now(UTC)).total_seconds() + 0.1)
    await gateway.services.wallets.tick()
    found = await _find(gateway, wallet.lago_id)
    assert found.status == "terminated" and found.terminated_at is not None
    assert found.credits_balance == "3.00000"  # terminating moves no credits
    assert (await image(gateway.url, gateway.key))[
        0
    ] == 200  # no active wallet left: the customer pays in arrears
    assert (await _find(gateway, wallet.lago_id)).credits_balance == "3.00000"


async def test_a_threshold_rule_tops_up_only_between_its_start_and_its_expiration(
    gateway: Running,
) -> None:
    price = await price_of_one_image(gateway)
    now = datetime.now(UTC)

    def rule(paid: int, **window: datetime) -> dict[str, Any]:
        return {
            "trigger": "threshold",
            "threshold_credits": str(price * 2),
            "method": "fixed",
            "paid_credits": str(price * paid),
            **{k: v.isoformat() for k, v in window.items()},
        }

    wallet = await _create(
        gateway,
        paid_credits=str(price * 3),
        recurring_transaction_rules=[
            rule(10, started_at=now + timedelta(days=1)),  # not started yet
            rule(20, expiration_at=now - timedelta(days=1)),  # expired
            rule(30, started_at=now - timedelta(days=1), expiration_at=now + timedelta(days=1)),
        ],
    )
    assert (await image(gateway.url, gateway.key))[0] == 200  # 2 prices left: crossed
    assert await wait_for_top_ups(lago(gateway), wallet.lago_id, 1)
    await asyncio.sleep(0.2)  # another rule's top-up, if any, would be made by now
    made = await threshold_top_ups(lago(gateway), wallet.lago_id)
    assert [Decimal(t.credit_amount) for t in made] == [price * 30]


async def test_the_ledger_exports_as_csv_with_one_row_per_entry(gateway: Running) -> None:
    price = await price_of_one_image(gateway)
    wallet = await _create(gateway, paid_credits=str(price * 3))
    for _ in range(2):
        assert (await image(gateway.url, gateway.key))[0] == 200
    await gateway.services.wallets.flush()
    entries = await _ledger(gateway, wallet.lago_id)
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{gateway.url}/api/v1/wallets/{wallet.lago_id}/ledger.csv", headers=ADMIN) as r,
    ):
        assert r.status == 200 and r.content_type == "text/csv"
        assert r.headers["Content-Disposition"].endswith(f'"wallet-{wallet.lago_id}.csv"')
        text = await r.text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == ",".join(LEDGER_COLUMNS)
    assert [r["kind"] for r in rows if r["kind"] != "hold"] == ["credit", "post", "post"]
    assert [r["key"] for r in rows] == [e["key"] for e in entries]
    assert len(finishes(entries)) == 2
    for name in ("available", "held", "consumed", "funding"):
        assert [Decimal(r[name]) for r in rows] == [Decimal(e[name]) for e in entries]
    assert [r["reserved"] for r in rows] == [e["reserved"] or "" for e in entries]
    available = sum((Decimal(r["available"]) for r in rows), Decimal(0))
    consumed = sum((Decimal(r["consumed"]) for r in rows), Decimal(0))
    assert available == price and consumed == 2 * price
    assert all(
        sum(Decimal(r[n]) for n in ("available", "held", "consumed", "funding")) == 0 for r in rows
    )  # every entry balances


async def test_a_credit_limit_set_through_the_admin_api_holds_unpaid_usage(
    gateway: Running,
) -> None:
    price = await price_of_one_image(gateway)
    async with aiohttp.ClientSession() as s:
        body = {"external_id": "beta", "name": "Beta", "credit_limit": str(price * 2)}
        async with s.post(f"{gateway.url}/admin/customers", json=body, headers=ADMIN) as r:
            assert r.status == 201
            assert Decimal((await r.json())["customer"]["credit_limit"]) == price * 2
        async with s.post(
            f"{gateway.url}/admin/keys", json={"name": "b", "customer": "beta"}, headers=ADMIN
        ) as r:
            assert r.status == 201
            key = (await r.json())["key"]
    results = [await image(gateway.url, key) for _ in range(3)]
    assert [status for status, _, _ in results] == [200, 200, 402]
    assert results[2][2]["error"]["code"] == "insufficient_credits"
    listed = await asyncio.to_thread(
        lago(gateway).wallets.find_all, {"external_customer_id": "beta"}
    )
    [wallet] = listed["wallets"]
    assert wallet.code == "credit_limit"
    found = await _find(gateway, wallet.lago_id)
    assert Decimal(found.credits_balance) == -2 * price  # unpaid usage, up to the limit
