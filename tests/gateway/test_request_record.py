"""One chat request through the running gateway (SQLite and PostgreSQL) and every field of
its request record: who (customer, subscription, team, key, tags), what (model asked and
served, deployment, provider, usage), what it cost and was priced, and how it went."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx
import orjson
from lago_python_client.client import Client
from lago_python_client.models import Charge, Charges, Plan, Subscription
from sqlalchemy import select

from faregate.store.tables.metering import requests
from tests.gateway.conftest import ADMIN_KEY, Running
from tests.gateway.test_billing_e2e import subscription_start
from tests.stored_events import events_of_request

PER_TOKEN = Decimal("0.00001")  # the plan's price of a token, input or output
INPUT, OUTPUT = Decimal("0.15"), Decimal("0.60")  # gpt-4o-mini in the catalog, per 1M


async def _plan_and_key(gw: Running) -> dict[str, object]:
    lago = Client(api_key=ADMIN_KEY, api_url=gw.url + "/")
    metric = await asyncio.to_thread(lago.billable_metrics.find, "tokens")
    charge = Charge(
        billable_metric_id=metric.lago_id,
        charge_model="standard",
        properties={"amount": str(PER_TOKEN)},
    )
    await asyncio.to_thread(
        lago.plans.create,
        Plan(name="Per token", code="per_token", interval="monthly", amount_cents=0,
             amount_currency="USD", charges=Charges(__root__=[charge])),
    )  # fmt: skip
    await asyncio.to_thread(
        lago.subscriptions.create,
        Subscription(external_customer_id="acme", plan_code="per_token", external_id="sub_rec",
                     billing_time="calendar", subscription_at=subscription_start().isoformat()),
    )  # fmt: skip
    async with httpx.AsyncClient() as http:
        created = await http.post(
            f"{gw.url}/admin/keys",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            json={"customer": "acme", "team": "research", "tags": ["drafts"],
                  "external_subscription_id": "sub_rec"},
        )  # fmt: skip
    assert created.status_code == 201
    return dict(created.json())


async def test_a_request_record_holds_every_field_of_the_call(gateway: Running) -> None:
    gw = gateway
    made = await _plan_and_key(gw)
    key = made["api_key"]
    assert isinstance(key, dict)
    started = time.perf_counter()
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{gw.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {made['key']}", "X-Faregate-Tags": "exp-1"},
            json={"model": "gpt-4o-mini", "max_tokens": 7,
                  "messages": [{"role": "user", "content": "Describe the sea"}]},
        )  # fmt: skip
    wall_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200
    usage = response.json()["usage"]
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    assert completion == 7
    await gw.services.writer.flush()
    request_id = response.headers["x-faregate-request-id"]
    async with gw.services.engine.connect() as conn:
        row = (await conn.execute(select(requests).where(requests.c.id == request_id))).one()
    record = row._asdict()
    cost = (prompt * INPUT + completion * OUTPUT) / 1_000_000
    price = (prompt + completion) * PER_TOKEN  # the plan's marginal fee, not cost x markup
    assert Decimal(response.headers["x-faregate-cost"]) == cost
    assert Decimal(response.headers["x-faregate-price"]) == price
    latency = record.pop("latency_ms")
    assert 0 < latency <= Decimal(wall_ms)
    created_at = record.pop("created_at")
    assert created_at is not None
    # Its usage events: carried by the record on SQLite (metering.derived), rows on PostgreSQL.
    carried = record.pop("events")
    async with gw.services.engine.connect() as conn:
        stored = await events_of_request(conn, request_id)
    kinds = sorted((e["code"], e["properties"].get("type")) for e in stored)
    assert kinds == [("requests", None), ("tokens", "input"), ("tokens", "output")]
    assert all(e["external_subscription_id"] == "sub_rec" for e in stored)
    if gw.services.engine.dialect.name == "sqlite":
        parts = orjson.loads(carried)["e"]
        assert [part[1] for part in parts] == ["requests", "tokens:input", "tokens:output"]
    else:
        assert carried is None
    assert record == {
        "id": request_id,
        "kind": "chat",
        "customer_id": key["customer_id"],
        "external_customer_id": "acme",
        "external_subscription_id": "sub_rec",
        "team_id": key["team_id"],
        "key_id": key["id"],
        "tags": ["drafts", "exp-1"],  # the key's, then the request's
        "model_requested": "gpt-4o-mini",
        "model_served": "gpt-4o-mini",
        "deployment": response.headers["x-faregate-deployment"],
        "provider": "openai",
        "status": 200,
        "error_code": None,
        "stream": False,
        "cache_hit": False,
        "attempts": 1,
        "ttft_ms": None,
        "input_tokens": prompt,
        "output_tokens": completion,
        "cached_input_tokens": 0,
        "reasoning_tokens": 0,
        "images": 0,
        "image_size": None,
        "image_quality": None,
        "image_steps": None,
        "seconds": Decimal(0),
        "usage_estimated": False,
        "cost_nanos": int(cost * 1_000_000_000),
        "price_nanos": int(price * 1_000_000_000),
        "saved_nanos": 0,
        "experiment": None,
        "arm": None,
    }
    assert key["team_id"] and key["customer_id"]  # named ids, not blanks that match blanks
