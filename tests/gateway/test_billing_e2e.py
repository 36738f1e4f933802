"""The Mistral-on-Lago plan end to end, on SQLite and PostgreSQL: requests through the
gateway with the openai SDK become `tokens` events on the customer's subscription (or on the
subscription a key names), show in current usage, and close into a finalized invoice whose
lines match amounts computed here by hand from the usage the SDK reported."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from lago_python_client.client import Client
from lago_python_client.models import (
    Charge,
    ChargeFilter,
    ChargeFilters,
    Charges,
    Plan,
    Subscription,
)
from sqlalchemy import select

from faregate.billing.periods import subscription_period
from faregate.billing.plans import Subscription as BillingSubscription
from faregate.cli import main
from faregate.mockprovider.server import MockServer
from faregate.store.tables.metering import requests
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import ADMIN_KEY, Running, gateway_config, start_gateway
from tests.stored_events import stored_events

# Per 1M tokens, input / output (USD), billed per started million (Lago's package charge).
PRICES = {"mistral-large": ("4", "12"), "mistral-small": ("1", "3")}


def subscription_start() -> datetime:
    """A minute ago, but never before the start of this UTC month: the subscription's first
    calendar period is then the current month on any date (in a month's first minute, a
    minute ago is last month, whose period ends before any request is made)."""
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return max(now - timedelta(minutes=1), this_month)


@pytest.fixture(params=["sqlite", "postgres"])
async def billing_gateway(
    request: pytest.FixtureRequest, tmp_path: Path, mock: MockServer
) -> AsyncIterator[Running]:
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    models = gateway_config(mock.url)["models"] + [
        {"name": "mistral-small", "deployments": [{"provider": "compat", "model": "mistral-small"}]}
    ]
    extra = {"models": models, "billing": {"run_interval": 0}}
    running = await start_gateway(tmp_path, url, mock, extra)
    yield running
    await running.runner.cleanup()
    if postgres:
        await drop_pg_database(url)


def lago(gw: Running) -> Client:
    return Client(api_key=ADMIN_KEY, api_url=gw.url + "/")


def package(amount: str) -> dict[str, Any]:
    return {"amount": amount, "package_size": 1_000_000, "free_units": 0}


async def create_plan_and_subscriptions(gw: Running, start: datetime) -> None:
    """The Mistral plan on the built-in `tokens` metric: one filter per model x type."""
    c = lago(gw)
    metric = await asyncio.to_thread(c.billable_metrics.find, "tokens")
    filters = [
        ChargeFilter(
            values={"model": [model], "type": [kind]},
            properties=package(price),
            invoice_display_name=f"{model} {kind}",
        )
        for model, prices in PRICES.items()
        for kind, price in zip(("input", "output"), prices, strict=True)
    ]
    plan = Plan(
        name="Mistral API",
        code="mistral",
        interval="monthly",
        amount_cents=2000,
        amount_currency="USD",
        charges=Charges(
            __root__=[
                Charge(
                    billable_metric_id=metric.lago_id,
                    charge_model="package",
                    properties=package("0"),
                    filters=ChargeFilters(__root__=filters),
                )
            ]
        ),
    )
    await asyncio.to_thread(c.plans.create, plan)
    for external_id in ("sub_main", "sub_lab"):
        await asyncio.to_thread(
            c.subscriptions.create,
            Subscription(
                external_customer_id="acme",
                plan_code="mistral",
                external_id=external_id,
                billing_time="calendar",
                subscription_at=start.isoformat(),
            ),
        )
        await asyncio.sleep(0.01)  # sub_main is the older: the customer's default


PRICES_SEEN: list[tuple[str, Decimal]] = []


async def chat(client: openai.AsyncOpenAI, model: str, text: str, max_tokens: int) -> Any:
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens
    )
    reply = raw.parse()
    PRICES_SEEN.append((model, Decimal(raw.headers["x-faregate-price"])))
    usage = reply.usage
    assert usage is not None  # neither cached input nor reasoning: input and output events only
    assert not (usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens)
    assert not (
        usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens
    )
    return reply.usage


def expected_lines(usages: list[tuple[str, Any]]) -> dict[str, tuple[int, int]]:
    """(units, amount_cents) per fee line, by hand: started millions x the per-1M price."""
    units: dict[str, int] = {}
    for model, usage in usages:
        for kind, n in (("input", usage.prompt_tokens), ("output", usage.completion_tokens)):
            units[f"{model} {kind}"] = units.get(f"{model} {kind}", 0) + n
    lines = {}
    for name, n in units.items():
        model, kind = name.split()
        price = int(PRICES[model][0 if kind == "input" else 1])
        lines[f"Tokens • {name}"] = (n, -(-n // 1_000_000) * price * 100)
    return lines


def usage_cli(url: str, customer: str, subscription: str | None = None) -> dict[str, Any]:
    import contextlib
    import io

    out = io.StringIO()
    args = ["usage", "--customer", customer, "--database-url", url]
    if subscription:
        args += ["--subscription", subscription]
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return orjson.loads(out.getvalue())["customer_usage"]


async def test_mistral_plan_from_requests_to_finalized_invoice(billing_gateway: Running) -> None:
    gw = billing_gateway
    start = subscription_start()
    await create_plan_and_subscriptions(gw, start)
    async with httpx.AsyncClient() as http:  # a second face of the customer: a key naming sub_lab
        created = await http.post(
            f"{gw.url}/admin/keys",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            json={"customer": "acme", "name": "lab", "external_subscription_id": "sub_lab"},
        )
        assert created.status_code == 201
    main_client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    lab_client = openai.AsyncOpenAI(
        base_url=f"{gw.url}/v1", api_key=created.json()["key"], max_retries=0
    )

    async with main_client, lab_client:
        main_usage = [
            ("mistral-large", await chat(main_client, "mistral-large", "Summarize the news", 40)),
            ("mistral-large", await chat(main_client, "mistral-large", "Translate: bonjour", 7)),
            ("mistral-small", await chat(main_client, "mistral-small", "Hi", 3)),
        ]
        lab_usage = [("mistral-small", await chat(lab_client, "mistral-small", "Ping", 5))]
    # Each request's price is its marginal fee on the plan, not cost x markup: the first
    # request of a bucket starts a package (large: $4 in + $12 out; small: $1 + $3), the
    # next one in the same packages costs nothing. They add up to the invoice's charges.
    assert PRICES_SEEN[-4:] == [
        ("mistral-large", Decimal(16)),
        ("mistral-large", Decimal(0)),
        ("mistral-small", Decimal(4)),
        ("mistral-small", Decimal(4)),  # sub_lab: its own period usage
    ]
    await gw.services.writer.flush()

    url = gw.settings.database_url
    usage = await asyncio.to_thread(usage_cli, url, "acme")  # the active (oldest) subscription
    assert usage["external_subscription_id"] == "sub_main"
    [tokens_usage] = usage["charges_usage"]
    by_filter = {f["invoice_display_name"]: f for f in tokens_usage["filters"] if f["values"]}
    for name, (units, cents) in expected_lines(main_usage).items():
        line = by_filter[name.removeprefix("Tokens • ")]
        assert (int(line["units"]), line["amount_cents"]) == (units, cents)
    assert usage["amount_cents"] == 400 + 1200 + 100 + 300
    c = lago(gw)  # the same through Lago's current_usage endpoint
    api_usage = await asyncio.to_thread(c.customers.current_usage, "acme", "sub_main")
    assert api_usage.amount_cents == usage["amount_cents"]
    lab = await asyncio.to_thread(c.customers.current_usage, "acme", "sub_lab")
    assert lab.amount_cents == 100 + 300

    # The month ends: the billing run closes the period into finalized invoices.
    sub = BillingSubscription("sub_main", "acme", "mistral", start)
    period = subscription_period(sub, "monthly", start)
    result = await gw.services.invoicing.run(now=period.end + timedelta(minutes=1))
    assert len(result.created) == 2 and sorted(result.finalized) == sorted(result.created)

    listed = await asyncio.to_thread(c.invoices.find_all, {"external_customer_id": "acme"})
    invoices = {i.subscriptions.__root__[0].external_id: i for i in listed["invoices"]}
    for external_id, usages in (("sub_main", main_usage), ("sub_lab", lab_usage)):
        invoice = invoices[external_id]
        assert invoice.status == "finalized" and invoice.number.startswith("FG-")
        lines = {
            f.item.invoice_display_name: (int(f.units), f.amount_cents)
            for f in invoice.fees.__root__
            if f.item.type == "charge"
        }
        expected = expected_lines(usages)
        assert lines == expected
        fee = [f.amount_cents for f in invoice.fees.__root__ if f.item.type == "subscription"]
        # The subscription started mid-period: its $20 fee is prorated by days (Lago's rule:
        # the start day counts whole), rounded half up to the cent once.
        month_start = start.replace(day=1).date()
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        days, days_in_month = (next_month - start.date()).days, (next_month - month_start).days
        prorated = (Decimal(2000) * days / days_in_month).quantize(Decimal(1), ROUND_HALF_UP)
        assert fee == [int(prorated)]
        charges = sum(cents for _, cents in expected.values())
        assert invoice.total_amount_cents == charges + fee[0]
        assert invoice.prepaid_credit_amount_cents == 0


async def test_a_key_cannot_name_another_customers_subscription(billing_gateway: Running) -> None:
    gw = billing_gateway
    await create_plan_and_subscriptions(gw, datetime.now(UTC))
    async with httpx.AsyncClient() as http:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        other = await http.post(
            f"{gw.url}/admin/customers", headers=headers, json={"external_id": "globex"}
        )
        assert other.status_code in (200, 201)
        refused = await http.post(
            f"{gw.url}/admin/keys",
            headers=headers,
            json={"customer": "globex", "external_subscription_id": "sub_main"},
        )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "subscription_of_another_customer"


async def test_tags_from_the_header_and_the_body_metadata_reach_records_and_events(
    billing_gateway: Running,
) -> None:
    gw = billing_gateway
    await create_plan_and_subscriptions(gw, subscription_start())
    headers = {"Authorization": f"Bearer {gw.key}", "X-Faregate-Tags": "exp-1, beta"}
    ids = []
    async with httpx.AsyncClient() as http:
        for metadata in ({"tags": ["beta", "eu"]}, {"tags": "eu, nightly"}):
            response = await http.post(
                f"{gw.url}/v1/chat/completions",
                headers=headers,
                json={
                    "model": "mistral-small",
                    "max_tokens": 3,
                    "metadata": metadata,
                    "messages": [{"role": "user", "content": "Hi"}],
                },
            )
            assert response.status_code == 200
            ids.append(response.headers["x-faregate-request-id"])
    await gw.services.writer.flush()
    async with gw.services.engine.connect() as conn:
        records = dict((await conn.execute(select(requests.c.id, requests.c.tags))).all())
        rows = [(e["transaction_id"], e["properties"]) for e in await stored_events(conn)]
    # The header's tags first, then the body's; a tag given twice is kept once.
    expected = {ids[0]: ["exp-1", "beta", "eu"], ids[1]: ["exp-1", "beta", "eu", "nightly"]}
    assert {i: records[i] for i in ids} == expected
    tagged = {(tx.split(":")[0], tuple(props["tags"])) for tx, props in rows}
    assert tagged == {(i, tuple(tags)) for i, tags in expected.items()}
    assert len(rows) == 6  # per request: requests, tokens input, tokens output


async def test_image_generations_are_billed_by_size_and_quality(billing_gateway: Running) -> None:
    """`/v1/images/generations` -> one `images` event per request (model, size, quality, steps,
    its provider cost) -> a plan charge with one price per size x quality -> current usage and
    the finalized invoice, amounts by hand."""
    gw = billing_gateway
    c = lago(gw)
    start = subscription_start()
    metric = await asyncio.to_thread(c.billable_metrics.find, "images")
    prices = {("1024x1792", "hd"): "0.20", ("1024x1024", "standard"): "0.04"}
    filters = [
        ChargeFilter(
            values={"size": [size], "quality": [quality]},
            properties={"amount": price},
            invoice_display_name=f"{size} {quality}",
        )
        for (size, quality), price in prices.items()
    ]
    await asyncio.to_thread(
        c.plans.create,
        Plan(
            name="Images",
            code="images",
            interval="monthly",
            amount_cents=0,
            amount_currency="USD",
            charges=Charges(
                __root__=[
                    Charge(
                        billable_metric_id=metric.lago_id,
                        charge_model="standard",
                        properties={"amount": "0.05"},
                        filters=ChargeFilters(__root__=filters),
                    )
                ]
            ),
        ),
    )
    await asyncio.to_thread(
        c.subscriptions.create,
        Subscription(
            external_customer_id="acme",
            plan_code="images",
            external_id="sub_img",
            billing_time="calendar",
            subscription_at=start.isoformat(),
        ),
    )
    asked = [  # (n, size, quality, steps)
        (2, "1024x1792", "hd", 30),
        (1, "1024x1024", "standard", 20),
        (1, "1792x1024", "standard", None),  # no filter for this size: the charge's default
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        for n, size, quality, steps in asked:
            body: dict[str, Any] = {
                "model": "dall-e-3",
                "prompt": "a lighthouse",
                "n": n,
                "size": size,
                "quality": quality,
            }
            if steps is not None:
                body["steps"] = steps
            response = await http.post(
                f"{gw.url}/v1/images/generations",
                json=body,
                headers={"Authorization": f"Bearer {gw.key}"},
            )
            assert response.status_code == 200, response.text
    await gw.services.writer.flush()
    async with gw.services.engine.connect() as conn:
        found = await stored_events(conn, code="images")
        rows = [e["properties"] for e in sorted(found, key=lambda e: e["timestamp"])]
    seen = [(p["model"], p["images"], p["size"], p["quality"], p["steps"], p["cost"]) for p in rows]
    # dall-e-3 list prices: $0.12 per hd 1024x1792 image, $0.04 and $0.08 per standard one.
    assert seen == [
        ("dall-e-3", 2, "1024x1792", "hd", 30, "0.24"),
        ("dall-e-3", 1, "1024x1024", "standard", 20, "0.04"),
        ("dall-e-3", 1, "1792x1024", "standard", None, "0.08"),
    ]

    expected = {"1024x1792 hd": (2, 40), "1024x1024 standard": (1, 4)}  # 2 x $0.20, 1 x $0.04
    usage = await asyncio.to_thread(c.customers.current_usage, "acme", "sub_img")
    [images_usage] = usage.charges_usage
    by_filter = {
        f.invoice_display_name: (int(f.units), f.amount_cents)
        for f in images_usage.filters
        if f.values
    }
    assert by_filter == expected
    [default] = [f for f in images_usage.filters if not f.values]
    assert (int(default.units), default.amount_cents) == (1, 5)  # 1 x $0.05
    assert usage.amount_cents == 40 + 4 + 5

    sub = BillingSubscription("sub_img", "acme", "images", start)
    period = subscription_period(sub, "monthly", start)
    await gw.services.invoicing.run(now=period.end + timedelta(minutes=1))
    listed = await asyncio.to_thread(c.invoices.find_all, {"external_subscription_id": "sub_img"})
    [invoice] = listed["invoices"]
    lines = {
        f.item.invoice_display_name: (int(f.units), f.amount_cents) for f in invoice.fees.__root__
    }
    assert lines == {**{f"Images • {k}": v for k, v in expected.items()}, "Images": (1, 5)}
    assert invoice.status == "finalized" and invoice.total_amount_cents == 49


def cli_json(args: list[str]) -> dict[str, Any]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    parsed: dict[str, Any] = orjson.loads(out.getvalue())
    return parsed


async def test_a_key_created_on_the_command_line_bills_the_subscription_it_names(
    billing_gateway: Running,
) -> None:
    gw = billing_gateway
    await create_plan_and_subscriptions(gw, subscription_start())
    args = [
        "keys",
        "create",
        "--customer",
        "acme",
        "--subscription",
        "sub_lab",
        "--database-url",
        gw.settings.database_url,
    ]
    created = await asyncio.to_thread(cli_json, args)
    assert created["api_key"]["external_subscription_id"] == "sub_lab"
    async with openai.AsyncOpenAI(
        base_url=f"{gw.url}/v1", api_key=created["key"], max_retries=0
    ) as client:
        await chat(client, "mistral-small", "Ping", 3)
    await gw.services.writer.flush()
    async with gw.services.engine.connect() as conn:
        billed = [e["external_subscription_id"] for e in await stored_events(conn, code="tokens")]
    assert billed and set(billed) == {"sub_lab"}  # not acme's default, sub_main
