"""The Lago v1 billing API driven by the official lago-python-client against a real
gateway on loopback (SQLite and PostgreSQL): catalog, subscriptions, event ingest, idempotency, batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import (
    BatchEvent,
    BillableMetric,
    BillableMetricFilter,
    BillableMetricFilters,
    Charge,
    ChargeFilter,
    ChargeFilters,
    Charges,
    Customer,
    Event,
    Plan,
    Subscription,
)
from sqlalchemy import func, select

import faregate.store.tables.billing  # noqa: F401  (registers the billing tables)
from faregate.app import start_app
from faregate.config import load_settings
from faregate.store.db import create_engine
from faregate.store.tables.base import metadata
from faregate.store.tables.metering import events
from tests.conftest import create_pg_database, drop_pg_database, free_port

ADMIN_KEY = "fg_admin_billing_test"


@dataclass
class Billing:
    url: str
    client: Client
    runner: Any

    @property
    def engine(self) -> Any:
        from faregate.api.state import SERVICES

        return self.runner.app[SERVICES].engine

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def event_count(self, **where: str) -> int:
        query = select(func.count()).select_from(events)
        for column, value in where.items():
            query = query.where(events.c[column] == value)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def post(self, path: str, body: Any, key: str = ADMIN_KEY) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.post(f"{self.url}{path}", json=body,
                                   headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(params=["sqlite", "postgres"])
async def billing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Billing]:
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    overrides = {
        "providers": {"openai": {"wire": "openai", "base_url": "http://127.0.0.1:9/v1",
                                 "api_key": "k"}},
        "models": [{"name": "gpt-4o-mini",
                    "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]}],
        # These tests define their own `tokens` metric (the built-in one is tested elsewhere).
        "billing": {"default_metrics": False, "run_interval": 0},
    }
    settings = load_settings(env={"FAREGATE_DATABASE_URL": url, "FAREGATE_ADMIN_KEY": ADMIN_KEY,
                                  "FAREGATE_DATA_DIR": str(tmp_path)}, overrides=overrides)
    settings.port = free_port()
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()
    runner = await start_app(settings)
    base = f"http://127.0.0.1:{settings.port}"
    yield Billing(base, Client(api_key=ADMIN_KEY, api_url=base + "/"), runner)
    await runner.cleanup()
    if postgres:
        await drop_pg_database(url)


async def setup_catalog(b: Billing) -> None:
    c = b.client
    await b.call(c.customers.create, Customer(external_id="acme", name="Acme", currency="USD"))
    metric = await b.call(c.billable_metrics.create, BillableMetric(
        name="Tokens", code="tokens", aggregation_type="sum_agg", field_name="tokens",
        filters=BillableMetricFilters(__root__=[
            BillableMetricFilter(key="model", values=["gpt-4o", "gpt-4o-mini"])])))
    await b.call(c.plans.create, Plan(
        name="Pro", code="pro", interval="monthly", amount_cents=1000, amount_currency="USD",
        charges=Charges(__root__=[Charge(
            billable_metric_id=metric.lago_id, charge_model="standard",
            properties={"amount": "0.001"},
            filters=ChargeFilters(__root__=[ChargeFilter(
                values={"model": ["gpt-4o"]}, properties={"amount": "0.01"})]))])))
    await b.call(c.subscriptions.create, Subscription(
        external_customer_id="acme", plan_code="pro", external_id="sub_1",
        billing_time="calendar", subscription_at="2026-11-01T00:00:00Z"))


async def test_catalog_round_trips_through_the_lago_client(billing: Billing) -> None:
    await setup_catalog(billing)
    c = billing.client
    customer = await billing.call(c.customers.find, "acme")
    assert customer.external_id == "acme" and customer.name == "Acme"
    again = await billing.call(c.customers.create, Customer(external_id="acme", name="Acme Inc"))
    assert again.lago_id == customer.lago_id and again.name == "Acme Inc"
    metric = await billing.call(c.billable_metrics.find, "tokens")
    assert metric.filters.__root__[0].values == ["gpt-4o", "gpt-4o-mini"]
    plan = await billing.call(c.plans.find, "pro")
    assert plan.amount_cents == 1000
    charge = plan.charges.__root__[0]
    assert charge.filters.__root__[0].values == {"model": ["gpt-4o"]}
    subs = await billing.call(c.subscriptions.find_all, {"external_customer_id": "acme"})
    assert [s.external_id for s in subs["subscriptions"]] == ["sub_1"]


async def test_a_resent_event_is_acknowledged_and_stored_once(billing: Billing) -> None:
    await setup_catalog(billing)
    event = Event(transaction_id="tx_1", external_subscription_id="sub_1", code="tokens",
                  timestamp=1763800000, properties={"tokens": 120, "model": "gpt-4o"})
    first = await billing.call(billing.client.events.create, event)
    second = await billing.call(billing.client.events.create, event)
    assert first.transaction_id == second.transaction_id == "tx_1"
    assert first.timestamp.startswith("2025-11-22T")
    assert await billing.event_count(transaction_id="tx_1") == 1
    no_timestamp = Event(transaction_id="tx_2", external_subscription_id="sub_1", code="tokens",
                         timestamp="1763800000.5")
    await billing.call(billing.client.events.create, no_timestamp)
    assert await billing.event_count() == 2


async def test_an_event_naming_unknown_metric_or_subscription_is_refused(billing: Billing) -> None:
    await setup_catalog(billing)
    bad_code = {"event": {"transaction_id": "t", "external_subscription_id": "sub_1",
                          "code": "nope"}}
    response = await billing.post("/api/v1/events", bad_code)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_errors" and "code" in body["error_details"]
    bad_sub = {"event": {"transaction_id": "t", "external_subscription_id": "ghost",
                         "code": "tokens"}}
    response = await billing.post("/api/v1/events", bad_sub)
    assert response.status_code == 422
    assert "external_subscription_id" in response.json()["error_details"]
    with pytest.raises(LagoApiError) as raised:
        await billing.call(billing.client.events.create, Event(
            transaction_id="t", external_subscription_id="sub_1", code="nope"))
    assert raised.value.status_code == 422
    assert await billing.event_count() == 0


async def test_a_batch_reports_each_bad_item_and_keeps_the_good_ones(billing: Billing) -> None:
    await setup_catalog(billing)
    good = [Event(transaction_id=f"b{i}", external_subscription_id="sub_1", code="tokens",
                  properties={"tokens": i}) for i in range(3)]
    await billing.call(billing.client.events.batch_create, BatchEvent(events=good))
    assert await billing.event_count() == 3
    body = {"events": [
        {"transaction_id": "b0", "external_subscription_id": "sub_1", "code": "tokens"},
        {"transaction_id": "b9", "external_subscription_id": "sub_1", "code": "nope"},
        {"transaction_id": "b10", "external_subscription_id": "sub_1", "code": "tokens",
         "timestamp": "yesterday"},
        {"transaction_id": "b11", "external_subscription_id": "sub_1", "code": "tokens"},
        {"transaction_id": "b11", "external_subscription_id": "sub_1", "code": "tokens"},
    ]}
    response = await billing.post("/api/v1/events/batch", body)
    assert response.status_code == 422
    result = response.json()
    assert result["error_details"] == {"1": {"code": ["billable_metric_not_found"]},
                                       "2": {"timestamp": ["invalid_format"]}}
    assert [e and e["transaction_id"] for e in result["events"]] == ["b0", None, None, "b11", "b11"]
    assert await billing.event_count() == 4  # neither b0 nor b11 twice
    too_many = {"events": [body["events"][0]] * 1001}
    assert (await billing.post("/api/v1/events/batch", too_many)).status_code == 422


async def test_billing_endpoints_need_the_admin_key(billing: Billing) -> None:
    response = await billing.post("/api/v1/customers", {"customer": {"external_id": "x"}},
                                  key="wrong")
    assert response.status_code == 401
