"""Two replicas on one PostgreSQL: a terminated subscription's external_id taken by a new
subscription on one replica, or a metric deleted there, is seen by the other's event
validation cache within its TTL (it kept the old entries until it restarted)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lago_python_client.client import Client
from lago_python_client.models import Customer, Event, Subscription

from faregate.app import start_app
from faregate.config import load_settings
from faregate.metering import ingest
from tests.api.conftest import ADMIN_KEY, Billing
from tests.api.test_billing_api import setup_catalog
from tests.api.test_billing_lifecycle import refused
from tests.conftest import create_pg_database, drop_pg_database, free_port, migrated


async def _replica(url: str, data_dir: Path) -> Billing:
    data_dir.mkdir()
    settings = load_settings(
        env={
            "FAREGATE_DATABASE_URL": url,
            "FAREGATE_ADMIN_KEY": ADMIN_KEY,
            "FAREGATE_DATA_DIR": str(data_dir),
        },
        overrides={"billing": {"default_metrics": False, "run_interval": 0}},
    )
    settings.port = free_port()
    runner = await start_app(settings)
    base = f"http://127.0.0.1:{settings.port}"
    return Billing(base, Client(api_key=ADMIN_KEY, api_url=base + "/"), runner)


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Billing, Billing]]:
    url = await create_pg_database()
    await migrated(url)
    started: list[Billing] = []
    try:
        started.append(await _replica(url, tmp_path / "a"))
        started.append(await _replica(url, tmp_path / "b"))
        yield started[0], started[1]
    finally:
        for replica in started:
            await replica.runner.cleanup()
        await drop_pg_database(url)


async def _event(b: Billing, tx: str) -> object:
    return await b.call(
        b.client.events.create,
        Event(
            transaction_id=tx,
            external_subscription_id="sub_1",
            code="tokens",
            timestamp=datetime.now(UTC).timestamp(),
            properties={"tokens": 1, "model": "gpt-4o"},
        ),
    )


async def test_another_replica_sees_a_reused_external_ids_new_subscription_within_the_ttl(
    replicas: tuple[Billing, Billing],
) -> None:
    a, b = replicas
    await setup_catalog(a)  # sub_1: acme on pro
    old = await a.call(a.client.subscriptions.find, "sub_1")
    assert (await _event(b, "t1")).lago_subscription_id == old.lago_id  # b caches sub_1
    await a.call(a.client.customers.create, Customer(external_id="zed", currency="USD"))
    await a.call(a.client.subscriptions.destroy, "sub_1")
    new = await a.call(
        a.client.subscriptions.create,
        Subscription(external_customer_id="zed", plan_code="pro", external_id="sub_1"),
    )
    await asyncio.sleep(ingest.SUBSCRIPTION_TTL + 0.1)
    event = await _event(b, "t2")
    assert (event.lago_subscription_id, event.lago_customer_id) == (
        new.lago_id,
        new.lago_customer_id,
    )
    assert await b.event_count(external_customer_id="zed") == 1  # stored as zed's too


async def test_another_replica_refuses_events_of_a_metric_deleted_elsewhere_within_the_ttl(
    replicas: tuple[Billing, Billing],
) -> None:
    a, b = replicas
    await setup_catalog(a)
    await _event(b, "t1")  # b caches the metric `tokens`
    await a.call(a.client.billable_metrics.destroy, "tokens")
    await asyncio.sleep(ingest.SUBSCRIPTION_TTL + 0.1)
    status, body = await refused(
        b,
        b.client.events.create,
        Event(transaction_id="t2", external_subscription_id="sub_1", code="tokens"),
    )
    assert status == 422 and body["error_details"] == {"code": ["billable_metric_not_found"]}
