"""Concurrent identical catalog calls answer what one at a time answers: Lago's customer
upsert and subscription resend are idempotent, so 20 at once all answer 200 with one row
(they answered 3-5 x 422 value_already_exist: a check-then-insert); of ten deletes of one
plan, metric or customer at once exactly one succeeds and the others answer 404 as after a
delete (all ten answered 200). On SQLite and PostgreSQL in one server, and with two server
processes on one PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY, Billing
from tests.api.test_billing_api import setup_catalog
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import ADMIN_KEY as REPLICA_KEY
from tests.gateway.processes import prepare_database, start_replicas, stop_replicas

SUBSCRIPTION = {
    "subscription": {"external_customer_id": "acme", "plan_code": "pro", "external_id": "sub_r"}
}


async def _at_once(
    urls: list[str], method: str, path: str, body: Any, n: int, key: str = ADMIN_KEY
) -> list[Any]:
    """`n` identical requests at once, spread over `urls` (one server, or several)."""
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        return list(
            await asyncio.gather(
                *(
                    http.request(method, urls[i % len(urls)] + path, json=body, headers=headers)
                    for i in range(n)
                )
            )
        )


def _statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


async def _check_upserts_and_deletes(urls: list[str], get: Any, key: str = ADMIN_KEY) -> None:
    customer = {"customer": {"external_id": "racer", "name": "Racer", "currency": "USD"}}
    created = await _at_once(urls, "POST", "/api/v1/customers", customer, 20, key)
    assert _statuses(created) == {200: 20}, [r.text for r in created if r.status_code != 200]
    assert len({r.json()["customer"]["lago_id"] for r in created}) == 1

    subscribed = await _at_once(urls, "POST", "/api/v1/subscriptions", SUBSCRIPTION, 20, key)
    assert _statuses(subscribed) == {200: 20}, [r.text for r in subscribed]
    (lago_id,) = {r.json()["subscription"]["lago_id"] for r in subscribed}
    assert (await get("/api/v1/subscriptions/sub_r")).json()["subscription"]["lago_id"] == lago_id

    deleted = await _at_once(urls, "DELETE", "/api/v1/plans/pro", None, 10, key)
    assert _statuses(deleted) == {200: 1, 404: 9}, [r.text for r in deleted]
    lost = next(r for r in deleted if r.status_code == 404).json()
    assert (lost["status"], lost["code"]) == (404, "plan_not_found")
    gone = (await get("/api/v1/subscriptions/sub_r")).json()["subscription"]
    assert gone["status"] == "terminated"

    deleted = await _at_once(urls, "DELETE", "/api/v1/billable_metrics/tokens", None, 10, key)
    assert _statuses(deleted) == {200: 1, 404: 9}, [r.text for r in deleted]
    deleted = await _at_once(urls, "DELETE", "/api/v1/customers/racer", None, 10, key)
    assert _statuses(deleted) == {200: 1, 404: 9}, [r.text for r in deleted]


async def test_concurrent_identical_creates_and_deletes_answer_as_one_at_a_time(
    billing: Billing,
) -> None:
    await setup_catalog(billing)
    await _check_upserts_and_deletes([billing.url], billing.get)


@pytest.fixture
async def pg() -> AsyncIterator[str]:
    url = await create_pg_database()
    yield url
    await drop_pg_database(url)


async def test_two_server_processes_on_one_postgresql_agree_on_creates_and_deletes(
    tmp_path: Path, pg: str
) -> None:
    await prepare_database(pg)
    replicas = await start_replicas(
        tmp_path, pg, "http://127.0.0.1:9/v1", {"billing": {"default_metrics": False}}
    )
    try:
        urls = [r.url for r in replicas]
        key = REPLICA_KEY
        (metric,) = await _at_once(urls[:1], "POST", "/api/v1/billable_metrics", _METRIC, 1, key)
        charge = {
            "billable_metric_id": metric.json()["billable_metric"]["lago_id"],
            "charge_model": "standard",
            "properties": {"amount": "0.001"},
        }
        body = {"plan": {**_PLAN["plan"], "charges": [charge]}}
        plan = await _at_once(urls[:1], "POST", "/api/v1/plans", body, 1, key)
        assert plan[0].status_code == 200, plan[0].text

        async def get(path: str) -> httpx.Response:
            (response,) = await _at_once(urls[1:], "GET", path, None, 1, key)
            return response

        await _check_upserts_and_deletes(urls, get, key)
    finally:
        await stop_replicas(replicas)


_METRIC = {
    "billable_metric": {
        "name": "Tokens",
        "code": "tokens",
        "aggregation_type": "sum_agg",
        "field_name": "tokens",
    }
}
_PLAN = {
    "plan": {
        "name": "Pro",
        "code": "pro",
        "interval": "monthly",
        "amount_cents": 1000,
        "amount_currency": "USD",
    }
}
