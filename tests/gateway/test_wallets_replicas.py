"""Two gateway processes (`faregate serve`, separate operating-system processes) on one
PostgreSQL, without and with Redis, never spend past a wallet together: the hold is one
conditional UPDATE of the wallet row, or one Lua script."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from lago_python_client.client import Client
from lago_python_client.models import Charge, Charges, Plan, Subscription, Wallet

from faregate.billing import invoice_repository as irepo
from faregate.billing.invoicing import Invoicing, InvoicingSettings
from faregate.billing.periods import subscription_period
from faregate.billing.plans import Subscription as BillingSubscription
from faregate.mockprovider.server import MockServer
from faregate.money import from_nanos
from faregate.store.db import create_engine
from faregate.wallets import repository as wallets_repo
from faregate.wallets import transaction_rows
from faregate.wallets.credits import WalletCredits
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import ADMIN_KEY
from tests.gateway.processes import prepare_database, start_replicas, stop_replicas
from tests.gateway.test_wallets import assert_exactly_37_of_200


@pytest.fixture
async def pg() -> AsyncIterator[str]:
    url = await create_pg_database()
    yield url
    await drop_pg_database(url)


async def test_two_processes_on_postgresql_spend_exactly_a_wallet_covering_37_of_200(
    tmp_path: Path, mock: MockServer, pg: str
) -> None:
    key = await prepare_database(pg)
    replicas = await start_replicas(tmp_path, pg, mock.url, {})
    try:
        await assert_exactly_37_of_200([r.url for r in replicas], key, mock)
    finally:
        await stop_replicas(replicas)


async def test_two_processes_on_postgresql_and_redis_spend_exactly_a_wallet_covering_37_of_200(
    tmp_path: Path, mock: MockServer, pg: str, redis_url: str, redis_prefix: str
) -> None:
    key = await prepare_database(pg)
    extra = {"redis_url": redis_url, "server": {"redis_prefix": redis_prefix}}
    replicas = await start_replicas(tmp_path, pg, mock.url, extra)
    try:
        await assert_exactly_37_of_200([r.url for r in replicas], key, mock)
    finally:
        await stop_replicas(replicas)


async def test_two_processes_opening_a_package_each_are_trued_up_to_the_invoice(
    tmp_path: Path, mock: MockServer, pg: str
) -> None:
    """Each replica prices plan requests from its own running period usage, so two of them
    that start at once each open the first package and debit it: the wallet runs one package
    ahead of the invoice. Finalizing the invoice applies one package and refunds the other,
    so the customer pays exactly the invoice."""
    key = await prepare_database(pg)
    replicas = await start_replicas(tmp_path, pg, mock.url, {"billing": {"run_interval": 0}})
    start = datetime.now(UTC) - timedelta(minutes=1)
    try:
        client = Client(api_key=ADMIN_KEY, api_url=replicas[0].url + "/")
        await create_package_plan(client, start)
        wallet = await asyncio.to_thread(
            client.wallets.create,
            Wallet(external_customer_id="acme", rate_amount="1", paid_credits="10"),
        )
        await asyncio.sleep(1.1)  # cached principals learn of the new subscription
        sdks = [
            openai.AsyncOpenAI(base_url=f"{r.url}/v1", api_key=key, max_retries=0) for r in replicas
        ]

        async def price(sdk: openai.AsyncOpenAI) -> Decimal:
            raw = await sdk.chat.completions.with_raw_response.create(
                model="mistral-large", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
            )
            return Decimal(raw.headers["x-faregate-price"])

        # Both processes load the period's usage (none yet) at once, then one more each.
        prices = list(await asyncio.gather(*(price(sdk) for sdk in sdks)))
        prices += [await price(sdk) for sdk in sdks]
        for sdk in sdks:
            await sdk.close()
    finally:
        await stop_replicas(replicas)  # a clean stop writes every pending event and entry
    assert prices == [1, 1, 0, 0]  # each process opened the first package

    engine = create_engine(pg)
    try:
        invoicing = Invoicing(engine, InvoicingSettings(run_interval=0), credits=WalletCredits())
        sub = BillingSubscription("sub_pkg", "acme", "pkg", start)
        period = subscription_period(sub, "monthly", datetime.now(UTC))
        result = await invoicing.run(now=period.end + timedelta(minutes=1))
        assert len(result.finalized) == 1
        async with engine.connect() as conn:
            invoice = await irepo.invoice_by_id(conn, result.finalized[0])
            row = await wallets_repo.wallet_by_id(conn, wallet.lago_id)
            refunds, _ = await transaction_rows.transactions_of(
                conn, wallet.lago_id, status="granted"
            )
    finally:
        await engine.dispose()
    assert invoice is not None and row is not None
    assert invoice["fees_amount_cents"] == 100  # one package: the invoice counts every event
    assert invoice["prepaid_credit_amount_cents"] == 100
    assert invoice["total_amount_cents"] == 0  # invoice total - credits applied = 0
    balance = from_nanos(int(row["funded_nanos"]) - int(row["consumed_nanos"]))
    assert balance == 10 - 1  # initial - invoice total
    assert [(r["transaction_type"], from_nanos(r["amount_nanos"])) for r in refunds] == [
        ("inbound", 1)
    ]
    assert refunds[0]["invoice_id"] == result.finalized[0]


async def create_package_plan(client: Client, start: datetime) -> None:
    """Plan `pkg`: 1 USD per started million tokens, no fee; subscription `sub_pkg` of acme."""
    metric = await asyncio.to_thread(client.billable_metrics.find, "tokens")
    plan = Plan(
        name="Packages",
        code="pkg",
        interval="monthly",
        amount_cents=0,
        amount_currency="USD",
        charges=Charges(
            __root__=[
                Charge(
                    billable_metric_id=metric.lago_id,
                    charge_model="package",
                    properties={"amount": "1", "package_size": 1_000_000, "free_units": 0},
                )
            ]
        ),
    )
    await asyncio.to_thread(client.plans.create, plan)
    await asyncio.to_thread(
        client.subscriptions.create,
        Subscription(
            external_customer_id="acme",
            plan_code="pkg",
            external_id="sub_pkg",
            billing_time="calendar",
            subscription_at=start.isoformat(),
        ),
    )
