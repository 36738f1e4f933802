"""Real-time debits telescope to the invoice: each request is debited what it adds to its
subscription's period fees (a package charge debits a whole package when a new one starts),
so when the period's invoice is finalized the consumed credits cover it exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from lago_python_client.models import Wallet

from faregate.billing.periods import subscription_period
from faregate.billing.plans import Subscription as BillingSubscription
from faregate.cli import main as cli_main
from faregate.mockprovider.server import MockServer
from faregate.money import from_nanos
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import ADMIN_KEY, Running, gateway_config, start_gateway
from tests.gateway.test_billing_e2e import chat, lago
from tests.gateway.test_billing_e2e import create_plan_and_subscriptions as _mistral_plan


@pytest.fixture(params=["sqlite", "postgres"])
async def billing_gateway(
    request: pytest.FixtureRequest, tmp_path: Path, mock: MockServer
) -> AsyncIterator[Running]:
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    models = gateway_config(mock.url)["models"] + [
        {"name": "mistral-small", "deployments": [{"provider": "compat", "model": "mistral-small"}]}
    ]
    running = await start_gateway(
        tmp_path, url, mock, {"models": models, "billing": {"run_interval": 0}}
    )
    yield running
    await running.runner.cleanup()
    if postgres:
        await drop_pg_database(url)


async def test_a_fully_prepaid_period_invoices_to_zero(
    billing_gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = billing_gateway
    start = datetime.now(UTC) - timedelta(minutes=1)
    # The Mistral plan (package per started million, per model and type), without its fee.
    import tests.gateway.test_billing_e2e as e2e

    original = e2e.Plan

    def no_fee(**kwargs: object) -> object:
        return original(**{**kwargs, "amount_cents": 0})

    monkeypatch.setattr(e2e, "Plan", no_fee)
    await _mistral_plan(gw, start)
    client = lago(gw)
    wallet = await asyncio.to_thread(
        client.wallets.create,
        Wallet(
            external_customer_id="acme", rate_amount="1", paid_credits="88", granted_credits="12"
        ),
    )
    sdk = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    async with sdk:
        await chat(sdk, "mistral-large", "Summarize the news", 40)  # debits 4 + 12
        await chat(sdk, "mistral-large", "Translate: bonjour", 7)  # same packages: 0
        await chat(sdk, "mistral-small", "Hi", 3)  # debits 1 + 3
    await gw.services.writer.flush()
    await gw.services.wallets.flush()
    found = await asyncio.to_thread(client.wallets.find, wallet.lago_id)
    assert Decimal(found.consumed_credits) == 20 and Decimal(found.credits_balance) == 80

    sub = BillingSubscription("sub_main", "acme", "mistral", start)
    period = subscription_period(sub, "monthly", datetime.now(UTC))
    await gw.services.invoicing.run(now=period.end + timedelta(minutes=1))
    listed = await asyncio.to_thread(client.invoices.find_all, {"external_customer_id": "acme"})
    invoice = next(
        i for i in listed["invoices"] if i.subscriptions.__root__[0].external_id == "sub_main"
    )
    assert invoice.status == "finalized" and invoice.fees_amount_cents == 2000
    assert invoice.prepaid_credit_amount_cents == 2000
    # Lago's split: the credits granted for free are drawn first, then the purchased ones
    # (every credit was reported purchased).
    assert invoice.prepaid_granted_credit_amount_cents == 1200
    assert invoice.prepaid_purchased_credit_amount_cents == 800
    assert invoice.total_amount_cents == 0  # invoice total - credits applied = 0
    after = await asyncio.to_thread(client.wallets.find, wallet.lago_id)
    assert Decimal(after.credits_balance) == 80  # debited once, in real time
    history = await asyncio.to_thread(client.wallet_transactions.find_all, wallet.lago_id)
    invoiced = [t for t in history["wallet_transactions"] if t.transaction_status == "invoiced"]
    assert [(t.transaction_type, Decimal(t.amount)) for t in invoiced] == [("outbound", 20)]


async def test_an_invoice_applies_only_the_credits_its_own_subscription_consumed(
    billing_gateway: Running,
) -> None:
    """Catalog-priced requests (made before the customer had a subscription) and another
    subscription's usage are paid from the same wallet, but never pay this invoice: sub_main's
    invoice applies its own usage debits only, and its subscription fee remains due."""
    gw = billing_gateway
    client = lago(gw)
    wallet = await asyncio.to_thread(
        client.wallets.create,
        Wallet(external_customer_id="acme", rate_amount="1", paid_credits="100"),
    )
    sdk = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    async with sdk:
        catalog = await sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
        )
        catalog_price = Decimal(catalog.headers["x-faregate-price"])
        assert catalog_price > 0
        start = datetime.now(UTC) - timedelta(minutes=1)
        await _mistral_plan(gw, start)  # sub_main (the key's, by default) and sub_lab
        async with httpx.AsyncClient() as http:
            created = await http.post(
                f"{gw.url}/admin/keys",
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                json={"customer": "acme", "name": "lab", "external_subscription_id": "sub_lab"},
            )
        lab = openai.AsyncOpenAI(
            base_url=f"{gw.url}/v1", api_key=created.json()["key"], max_retries=0
        )
        await asyncio.sleep(1.1)  # the key's cached principal learns of its subscription
        async with lab:
            await chat(sdk, "mistral-large", "Summarize the news", 40)  # sub_main: 4 + 12
            await chat(sdk, "mistral-small", "Hi", 3)  # sub_main: 1 + 3
            await chat(lab, "mistral-small", "Hi", 3)  # sub_lab: 1 + 3
    await gw.services.writer.flush()
    await gw.services.wallets.flush()

    sub = BillingSubscription("sub_main", "acme", "mistral", start)
    period = subscription_period(sub, "monthly", datetime.now(UTC))
    await gw.services.invoicing.run(now=period.end + timedelta(minutes=1))
    listed = await asyncio.to_thread(client.invoices.find_all, {"external_customer_id": "acme"})
    invoices = {i.subscriptions.__root__[0].external_id: i for i in listed["invoices"]}
    main, lab_invoice = invoices["sub_main"], invoices["sub_lab"]
    assert main.status == lab_invoice.status == "finalized"
    assert main.prepaid_credit_amount_cents == 2000  # its usage, not the catalog's nor sub_lab's
    # The (prorated) subscription fee remains due.
    assert main.total_amount_cents == main.fees_amount_cents - 2000 > 0
    assert lab_invoice.prepaid_credit_amount_cents == 400
    assert lab_invoice.total_amount_cents == lab_invoice.fees_amount_cents - 400
    row = await gw.services.wallets.service.get(wallet.lago_id)
    balance = from_nanos(int(row["funded_nanos"]) - int(row["consumed_nanos"]))
    assert balance == 100 - 24 - catalog_price  # no refund: the debits were exact
    history = await asyncio.to_thread(client.wallet_transactions.find_all, wallet.lago_id)
    invoiced = sorted(
        Decimal(t.amount)
        for t in history["wallet_transactions"]
        if t.transaction_status == "invoiced"
    )
    assert invoiced == [4, 20]


async def test_a_draft_finalized_on_the_command_line_applies_the_wallet_credits(
    tmp_path: Path,
    mock: MockServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    models = gateway_config(mock.url)["models"]
    url = f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    gw = await start_gateway(
        tmp_path,
        url,
        mock,
        {"models": models, "billing": {"run_interval": 0, "grace_period_days": 3}},
    )
    try:
        start = datetime.now(UTC) - timedelta(minutes=1)
        import tests.gateway.test_billing_e2e as e2e

        original = e2e.Plan
        monkeypatch.setattr(e2e, "Plan", lambda **kw: original(**{**kw, "amount_cents": 0}))
        await _mistral_plan(gw, start)
        client = lago(gw)
        await asyncio.to_thread(
            client.wallets.create,
            Wallet(external_customer_id="acme", rate_amount="1", paid_credits="100"),
        )
        sdk = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
        async with sdk:
            await chat(sdk, "mistral-large", "Summarize the news", 40)  # debits 4 + 12
        await gw.services.writer.flush()
        await gw.services.wallets.flush()
        sub = BillingSubscription("sub_main", "acme", "mistral", start)
        period = subscription_period(sub, "monthly", datetime.now(UTC))
        run = await gw.services.invoicing.run(now=period.end + timedelta(minutes=1))
        drafts = run.created
        assert drafts and not run.finalized  # the grace period keeps them drafts
        outputs = []
        for invoice_id in drafts:
            capsys.readouterr()
            code = await asyncio.to_thread(
                cli_main, ["invoices", "finalize", invoice_id, "--database-url", url]
            )
            assert code == 0
            outputs.append(orjson.loads(capsys.readouterr().out)["invoice"])
        main = next(i for i in outputs if i["subscriptions"][0]["external_id"] == "sub_main")
        assert main["status"] == "finalized" and main["fees_amount_cents"] == 1600
        assert main["prepaid_credit_amount_cents"] == 1600 and main["total_amount_cents"] == 0
    finally:
        await gw.runner.cleanup()
