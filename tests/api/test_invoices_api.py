"""Invoices through the official lago-python-client against a real server (SQLite and
PostgreSQL): built-in metrics, a billing run closing an ended period, draft refresh, finalize
(numbered, immutable), download with a working file_url, list filters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import (
    BatchEvent,
    BillableMetric,
    Charge,
    ChargeFilter,
    ChargeFilters,
    Charges,
    Customer,
    Event,
    Plan,
    Subscription,
)

from faregate.api.state import SERVICES
from faregate.app import start_app
from faregate.cli import main
from faregate.config import load_settings
from tests.billing.test_render import pdf_texts
from tests.conftest import create_pg_database, drop_pg_database, free_port, migrated
from tests.webhooks.receiver import Receiver

ADMIN_KEY = "fg_admin_invoices_test"


def _last_month() -> tuple[datetime, datetime]:
    """The calendar month before the current one, so exactly one period has ended today."""
    this_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (this_month - timedelta(days=1)).replace(day=1)
    return start, this_month


PERIOD_START, PERIOD_END = _last_month()
IN_PERIOD = int((PERIOD_START + timedelta(days=2, hours=3)).timestamp())  # inside that month


@dataclass
class Server:
    url: str
    client: Client
    runner: Any
    receiver: Receiver
    database_url: str

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def http(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient() as http:
            return await http.request(method, f"{self.url}{path}", headers=headers, **kwargs)


@pytest.fixture(params=["sqlite", "postgres"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'i.db'}"
    receiver = await Receiver().start()
    overrides = {
        "providers": {
            "openai": {"wire": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}
        },
        "models": [
            {"name": "gpt-4o-mini", "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]}
        ],
        "billing": {"run_interval": 0, "grace_period_days": 3650},
        "webhooks": {"hmac_key": "whsec", "endpoints": [receiver.url], "poll_seconds": 0.02},
    }
    settings = load_settings(
        env={
            "FAREGATE_DATABASE_URL": url,
            "FAREGATE_ADMIN_KEY": ADMIN_KEY,
            "FAREGATE_DATA_DIR": str(tmp_path),
        },
        overrides=overrides,
    )
    settings.port = free_port()
    await migrated(url)
    runner = await start_app(settings)
    base = f"http://127.0.0.1:{settings.port}"
    yield Server(base, Client(api_key=ADMIN_KEY, api_url=base + "/"), runner, receiver, url)
    await runner.cleanup()
    await receiver.close()
    if postgres:
        await drop_pg_database(url)


def per_token(amount: str) -> dict[str, str]:
    return {"amount": amount}


async def subscribe(s: Server) -> None:
    """A $10/month plan on the built-in `tokens` metric: gpt-4o-mini at $1 per 1M input
    tokens and $4 per 1M output tokens, subscribed since the start of last month."""
    c = s.client
    await s.call(c.customers.create, Customer(external_id="acme", name="Acme", currency="USD"))
    metric = await s.call(c.billable_metrics.find, "tokens")
    filters = [
        ChargeFilter(
            values={"model": ["gpt-4o-mini"], "type": ["input"]},
            properties=per_token("0.000001"),
            invoice_display_name="mini input",
        ),
        ChargeFilter(
            values={"model": ["gpt-4o-mini"], "type": ["output"]},
            properties=per_token("0.000004"),
            invoice_display_name="mini output",
        ),
    ]
    await s.call(
        c.plans.create,
        Plan(
            name="Pro",
            code="pro",
            interval="monthly",
            amount_cents=1000,
            amount_currency="USD",
            charges=Charges(
                __root__=[
                    Charge(
                        billable_metric_id=metric.lago_id,
                        charge_model="standard",
                        properties=per_token("0"),
                        filters=ChargeFilters(__root__=filters),
                    )
                ]
            ),
        ),
    )
    await s.call(
        c.subscriptions.create,
        Subscription(
            external_customer_id="acme",
            plan_code="pro",
            external_id="sub_1",
            billing_time="calendar",
            subscription_at=PERIOD_START.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ),
    )


def tokens(tx: str, kind: str, count: int) -> Event:
    return Event(
        transaction_id=tx,
        external_subscription_id="sub_1",
        code="tokens",
        timestamp=IN_PERIOD,
        properties={"model": "gpt-4o-mini", "type": kind, "tokens": count},
    )


def fee_amounts(invoice: Any) -> dict[str, int]:
    return {f.item.invoice_display_name: f.amount_cents for f in invoice.fees.__root__}


async def test_the_built_in_metrics_are_listed(server: Server) -> None:
    listed = await server.call(server.client.billable_metrics.find_all)
    metrics = {m.code: m for m in listed["billable_metrics"]}
    assert {"tokens", "images", "seconds", "requests"} <= set(metrics)
    tokens_metric = metrics["tokens"]
    assert tokens_metric.aggregation_type == "sum_agg" and tokens_metric.field_name == "tokens"
    keys = {f.key: f.values for f in tokens_metric.filters.__root__}
    assert set(keys) == {"model", "type", "provider"}
    assert "gpt-4o-mini" in keys["model"] and "mistral-large" in keys["model"]
    assert set(keys["type"]) == {"input", "output", "cached_input", "reasoning"}
    image_keys = {f.key for f in metrics["images"].filters.__root__}
    assert image_keys == {"model", "size", "quality", "steps"}


async def test_a_billing_run_invoices_the_ended_period_once(server: Server) -> None:
    await subscribe(server)
    c = server.client
    await server.call(
        c.events.batch_create,
        BatchEvent(events=[tokens("in-1", "input", 1_234_567), tokens("out-1", "output", 250_001)]),
    )
    run = (await server.http("POST", "/api/v1/billing_runs")).json()["billing_run"]
    assert len(run["created"]) == 1
    again = (await server.http("POST", "/api/v1/billing_runs")).json()["billing_run"]
    assert again["created"] == []  # the period is invoiced already

    found = await server.call(c.invoices.find_all, {"external_customer_id": "acme"})
    [invoice] = found["invoices"]
    assert invoice.status == "draft" and invoice.currency == "USD"
    # $10 fee; 1.234567 -> $1.23; 250,001 x 0.000004 = 1.000004 -> $1.00
    assert fee_amounts(invoice) == {
        "Pro": 1000,
        "Tokens • mini input": 123,
        "Tokens • mini output": 100,
    }
    assert invoice.fees_amount_cents == invoice.total_amount_cents == 1223
    assert invoice.prepaid_credit_amount_cents == 0
    period = invoice.billing_periods.__root__[0]
    assert period.charges_from_datetime == PERIOD_START.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert period.charges_to_datetime == PERIOD_END.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_draft_absorbs_late_events_and_a_finalized_invoice_never_changes(
    server: Server,
) -> None:
    await subscribe(server)
    c = server.client
    await server.call(c.events.create, tokens("in-1", "input", 1_234_567))
    [invoice_id] = (await server.http("POST", "/api/v1/billing_runs")).json()["billing_run"][
        "created"
    ]
    await server.call(c.events.create, tokens("in-2", "input", 1_000_000))  # late
    refreshed = await server.call(c.invoices.refresh, invoice_id)
    assert fee_amounts(refreshed)["Tokens • mini input"] == 223

    finalized = await server.call(c.invoices.finalize, invoice_id)
    assert finalized.status == "finalized" and finalized.total_amount_cents == 1223
    assert finalized.number == "FG-000001" and finalized.sequential_id == 1
    await server.call(c.events.create, tokens("in-3", "input", 5_000_000))  # too late
    after = await server.call(c.invoices.refresh, invoice_id)
    assert after.total_amount_cents == 1223 and after.status == "finalized"
    assert (await server.call(c.invoices.find, invoice_id)).total_amount_cents == 1223

    drafts = await server.call(c.invoices.find_all, {"status": "draft"})
    assert drafts["invoices"] == []
    done = await server.call(
        c.invoices.find_all, {"status": "finalized", "external_customer_id": "acme"}
    )
    assert [i.lago_id for i in done["invoices"]] == [invoice_id]


async def test_a_billing_run_reports_the_subscriptions_it_could_not_invoice(
    server: Server,
) -> None:
    """A run that failed for a subscription answered 200 with empty lists (only the log
    said why): here an invoice of 10^22 cents, past the BIGINT it is stored in, from a
    $1,000,000-a-token charge and 10^14 tokens (both within the usage bounds)."""
    await subscribe(server)
    c = server.client
    await server.call(c.customers.create, Customer(external_id="whale", currency="USD"))
    metric = await server.call(c.billable_metrics.find, "tokens")
    million = Charge(
        billable_metric_id=metric.lago_id, charge_model="standard", properties=per_token("1000000")
    )
    await server.call(
        c.plans.create,
        Plan(
            name="Whale",
            code="whale",
            interval="monthly",
            amount_cents=0,
            amount_currency="USD",
            charges=Charges(__root__=[million]),
        ),
    )
    since = PERIOD_START.strftime("%Y-%m-%dT%H:%M:%SZ")
    whale = Subscription(
        external_customer_id="whale",
        plan_code="whale",
        external_id="sub_whale",
        billing_time="calendar",
        subscription_at=since,
    )
    await server.call(c.subscriptions.create, whale)
    huge = tokens("whale-1", "input", 10**14).copy(update={"external_subscription_id": "sub_whale"})
    await server.call(c.events.create, huge)
    await server.call(c.events.create, tokens("in-1", "input", 1_234_567))

    reply = await server.http("POST", "/api/v1/billing_runs")
    assert reply.status_code == 200
    run = reply.json()["billing_run"]
    out_of_range = {
        "external_subscription_id": "sub_whale",
        "reason": "amount_cents: value_is_out_of_range",
    }
    assert run["failed"] == [out_of_range]
    [invoice_id] = run["created"]  # acme's: the others are still invoiced
    assert (await server.call(c.invoices.find, invoice_id)).customer.external_id == "acme"

    # A late event takes acme's draft past the bound too: refreshing it fails, and says so.
    late = tokens("in-2", "input", 0)
    late.properties["tokens"] = str(10**24)  # the client's JSON holds 64 bits
    await server.call(c.events.create, late)
    run = (await server.http("POST", "/api/v1/billing_runs")).json()["billing_run"]
    assert run["failed"] == [
        out_of_range,
        {
            "external_subscription_id": "sub_1",
            "reason": "amount_cents: value_is_out_of_range",
        },
    ]
    assert run["refreshed"] == []
    refresh = await server.http("PUT", f"/api/v1/invoices/{invoice_id}/refresh")
    assert refresh.status_code == 422
    assert refresh.json()["error_details"] == {"amount_cents": ["value_is_out_of_range"]}
    assert (await server.call(c.invoices.find, invoice_id)).total_amount_cents == 1123


async def test_download_gives_a_file_url_serving_the_pdf(server: Server) -> None:
    await subscribe(server)
    await server.call(server.client.events.create, tokens("in-1", "input", 1_000_000))
    [invoice_id] = (await server.http("POST", "/api/v1/billing_runs")).json()["billing_run"][
        "created"
    ]
    downloaded = await server.call(server.client.invoices.download, invoice_id)
    assert downloaded.file_url.startswith(server.url)
    async with httpx.AsyncClient() as http:
        pdf = await http.get(downloaded.file_url)  # no API key: the URL carries a signature
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        html = await http.get(downloaded.file_url.replace("file.pdf", "file.html"))
        assert html.status_code == 200 and "mini input" in html.text
        # The document shows the invoice's number: the draft's, then the one finalizing gives.
        assert f"<h1>Invoice {downloaded.number}</h1>" in html.text
        forged = await http.get(f"{server.url}/api/v1/invoices/{invoice_id}/file.pdf?signature=x")
        assert forged.status_code == 401
        finalized = await server.call(server.client.invoices.finalize, invoice_id)
        assert finalized.number == "FG-000001"
        html = await http.get(downloaded.file_url.replace("file.pdf", "file.html"))
        assert "<h1>Invoice FG-000001</h1>" in html.text
        pdf = await http.get(downloaded.file_url)
        assert "Invoice FG-000001" in pdf_texts(pdf.content)


async def test_each_fee_carries_its_taxes_and_the_lago_ids_of_its_charge_and_metric(
    server: Server,
) -> None:
    """Lago's fee: `taxes_rate` and `taxes_amount_cents` (its rounded amount at the rate),
    `total_amount_cents` with them; `lago_charge_id` is the charge's lago_id and
    `lago_item_id` the metric's (a charge fee) or the subscription's (they were 0, and the
    charge's code twice)."""
    from dataclasses import replace
    from decimal import Decimal

    invoicing = server.runner.app[SERVICES].invoicing
    invoicing.settings = replace(invoicing.settings, tax_rate=Decimal("20"))
    await subscribe(server)
    c = server.client
    await server.call(c.events.create, tokens("in-1", "input", 1_234_567))  # $1.234567
    [invoice_id] = (await server.http("POST", "/api/v1/billing_runs")).json()["billing_run"][
        "created"
    ]
    invoice = await server.call(c.invoices.find, invoice_id)
    plan = await server.call(c.plans.find, "pro")
    [charge] = plan.charges.__root__
    metric = await server.call(c.billable_metrics.find, "tokens")
    sub = await server.call(c.subscriptions.find, "sub_1")
    fees = {f.item.type: f for f in invoice.fees.__root__}
    assert {k: (f.amount_cents, f.taxes_rate, f.taxes_amount_cents, f.total_amount_cents)
            for k, f in fees.items()} == {
        "subscription": (1000, 20.0, 200, 1200),
        "charge": (123, 20.0, 25, 148),  # 24.6 cents of taxes, rounded
    }  # fmt: skip
    assert (fees["charge"].lago_charge_id, fees["charge"].item.lago_item_id) == (
        charge.lago_id,
        metric.lago_id,
    )
    assert (fees["subscription"].lago_charge_id, fees["subscription"].item.lago_item_id) == (
        None,
        sub.lago_id,
    )
    assert invoice.taxes_amount_cents == 225  # 20% of 11.23, rounded once on the invoice


async def test_an_unknown_invoice_is_a_lago_404(server: Server) -> None:
    with pytest.raises(LagoApiError) as raised:
        await server.call(server.client.invoices.find, "nope")
    assert raised.value.status_code == 404


async def test_invoice_and_event_error_webhooks(server: Server) -> None:
    await subscribe(server)
    c = server.client
    await server.call(c.events.create, tokens("in-1", "input", 1_000_000))
    [invoice_id] = (await server.http("POST", "/api/v1/billing_runs")).json()["billing_run"][
        "created"
    ]
    await server.call(c.invoices.finalize, invoice_id)
    bad = {"event": {"transaction_id": "t", "external_subscription_id": "sub_1", "code": "nope"}}
    assert (await server.http("POST", "/api/v1/events", json=bad)).status_code == 422
    await server.receiver.wait_for(5)  # subscription.started, then the four below
    drafted, created, finalized = (
        server.receiver.of_type(t)
        for t in ("invoice.drafted", "invoice.created", "invoice.finalized")
    )
    assert [d.json["invoice"]["status"] for d in drafted] == ["draft"]
    assert [d.json["invoice"]["total_amount_cents"] for d in created] == [1100]
    assert created[0].json["object_type"] == "invoice"
    assert finalized[0].json["invoice"]["number"] == "FG-000001"
    [error] = server.receiver.of_type("event.error")
    assert error.json["object_type"] == "event_error"
    assert error.json["event_error"]["event"]["code"] == "nope"
    assert "billable_metric_not_found" in error.json["event_error"]["message"]


async def test_a_subscription_that_starts_sends_lagos_subscription_started(
    server: Server,
) -> None:
    """Created active, or activated by the billing run when its start comes, a subscription
    is announced as Lago's Subscriptions::ActivateService does; a pending one is not."""
    await subscribe(server)  # sub_1, active at once
    start = datetime.now(UTC) + timedelta(seconds=1)
    await server.call(
        server.client.subscriptions.create,
        Subscription(
            external_customer_id="acme",
            plan_code="pro",
            external_id="sub_later",
            subscription_at=start.isoformat(),
        ),
    )
    [first] = await server.receiver.wait_for(1)
    assert (first.json["webhook_type"], first.json["object_type"]) == (
        "subscription.started",
        "subscription",
    )
    assert (first.json["subscription"]["external_id"], first.json["subscription"]["status"]) == (
        "sub_1",
        "active",
    )
    await asyncio.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()) + 0.1)
    for _ in range(2):  # a second run activates nothing again
        await server.http("POST", "/api/v1/billing_runs")
    await server.receiver.wait_for(2)
    await asyncio.sleep(0.3)
    started = [d.json["subscription"] for d in server.receiver.of_type("subscription.started")]
    assert [(s["external_id"], s["status"]) for s in started] == [
        ("sub_1", "active"),
        ("sub_later", "active"),
    ]
    assert datetime.fromisoformat(started[1]["started_at"]) == start


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(list(args)) == 0
    return dict(orjson.loads(capsys.readouterr().out))


async def test_the_invoices_command_line(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await subscribe(server)
    await server.call(server.client.events.create, tokens("in-1", "input", 1_000_000))
    await server.runner.app[SERVICES].writer.flush()  # the CLI reads the database only
    db = ("--database-url", server.database_url)
    run = await asyncio.to_thread(cli, capsys, "invoices", "run", *db)
    [invoice_id] = run["billing_run"]["created"]
    assert run["billing_run"]["finalized"] == [invoice_id]  # no grace period configured here
    listed = await asyncio.to_thread(cli, capsys, "invoices", "list", "--customer", "acme", *db)
    assert [i["lago_id"] for i in listed["invoices"]] == [invoice_id]
    shown = await asyncio.to_thread(cli, capsys, "invoices", "show", invoice_id, *db)
    assert shown["invoice"]["total_amount_cents"] == 1100
    assert shown["invoice"]["customer"]["external_id"] == "acme"
    again = await asyncio.to_thread(cli, capsys, "invoices", "finalize", invoice_id, *db)
    assert again["invoice"]["number"] == shown["invoice"]["number"]  # finalizing twice: no-op
    out = tmp_path / "invoice.pdf"
    await asyncio.to_thread(cli, capsys, "invoices", "download", invoice_id, "-o", str(out), *db)
    assert out.read_bytes().startswith(b"%PDF")


async def test_concurrent_billing_runs_make_one_invoice_per_period(server: Server) -> None:
    await subscribe(server)
    invoicing = server.runner.app[SERVICES].invoicing
    results = await asyncio.gather(*(invoicing.run() for _ in range(4)))
    assert sum(len(r.created) for r in results) == 1
    listed = await server.call(server.client.invoices.find_all)
    assert len(listed["invoices"]) == 1


async def test_a_pay_in_advance_plan_bills_its_fee_at_the_start_of_each_period(
    server: Server,
) -> None:
    c = server.client
    await server.call(c.customers.create, Customer(external_id="acme", currency="USD"))
    await server.call(
        c.plans.create,
        Plan(
            name="Seat",
            code="seat",
            interval="monthly",
            amount_cents=3100,
            amount_currency="USD",
            pay_in_advance=True,
        ),
    )
    await server.call(
        c.subscriptions.create,
        Subscription(
            external_customer_id="acme",
            plan_code="seat",
            external_id="sub_1",
            billing_time="calendar",
            subscription_at="2026-10-16T00:00:00Z",
        ),
    )
    invoicing = server.runner.app[SERVICES].invoicing
    result = await invoicing.run(now=datetime(2026, 11, 2, tzinfo=UTC))
    assert len(result.created) == 2
    listed = await server.call(c.invoices.find_all, {"external_subscription_id": "sub_1"})
    by_reason = {i.billing_periods.__root__[0].invoicing_reason: i for i in listed["invoices"]}
    # Opening: October 16-31 is 16 of 31 days of $31; the October invoice bills November.
    assert by_reason["subscription_starting"].total_amount_cents == 1600
    assert by_reason["subscription_periodic"].total_amount_cents == 3100


async def test_a_recurring_metric_carries_its_units_into_the_next_periods_invoice(
    server: Server,
) -> None:
    """Seats (a recurring sum): 3 added in the first month, 2 more in the second; the second
    month's invoice bills the 3 carried over plus the 2 new ones."""
    c = server.client
    first_start = (PERIOD_START - timedelta(days=1)).replace(day=1)
    await server.call(c.customers.create, Customer(external_id="acme", currency="USD"))
    seats = await server.call(
        c.billable_metrics.create,
        BillableMetric(
            name="Seats",
            code="seats",
            aggregation_type="sum_agg",
            field_name="seats",
            recurring=True,
        ),
    )
    await server.call(
        c.plans.create,
        Plan(
            name="Team",
            code="team",
            interval="monthly",
            amount_cents=0,
            amount_currency="USD",
            charges=Charges(
                __root__=[
                    Charge(
                        billable_metric_id=seats.lago_id,
                        charge_model="standard",
                        properties={"amount": "5"},
                    )
                ]
            ),
        ),
    )
    await server.call(
        c.subscriptions.create,
        Subscription(
            external_customer_id="acme",
            plan_code="team",
            external_id="sub_seats",
            billing_time="calendar",
            subscription_at=first_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ),
    )
    added = [
        ("s1", first_start + timedelta(days=3), 3),
        ("s2", PERIOD_START + timedelta(days=5), 2),
    ]
    await server.call(
        c.events.batch_create,
        BatchEvent(
            events=[
                Event(
                    transaction_id=tx,
                    external_subscription_id="sub_seats",
                    code="seats",
                    timestamp=int(at.timestamp()),
                    properties={"seats": n},
                )
                for tx, at, n in added
            ]
        ),
    )
    await server.http("POST", "/api/v1/billing_runs")
    found = await server.call(c.invoices.find_all, {"external_subscription_id": "sub_seats"})
    by_month = {
        i.billing_periods.__root__[0].charges_from_datetime[:7]: i for i in found["invoices"]
    }
    first, second = (
        by_month[first_start.strftime("%Y-%m")],
        by_month[PERIOD_START.strftime("%Y-%m")],
    )
    [first_fee], [second_fee] = first.fees.__root__, second.fees.__root__
    assert (int(first_fee.units), first_fee.amount_cents) == (3, 1500)  # 3 x $5
    assert (int(second_fee.units), second_fee.amount_cents) == (5, 2500)  # (3 + 2) x $5
    assert len(by_month) == 2
