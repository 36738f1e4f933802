"""The Lago v1 billing API driven by the official lago-python-client against a real
gateway on loopback (SQLite and PostgreSQL): catalog, subscriptions, event ingest, idempotency, batches."""

from __future__ import annotations

import pytest
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

from tests.api.conftest import Billing


async def setup_catalog(b: Billing) -> None:
    c = b.client
    await b.call(c.customers.create, Customer(external_id="acme", name="Acme", currency="USD"))
    metric = await b.call(
        c.billable_metrics.create,
        BillableMetric(
            name="Tokens",
            code="tokens",
            aggregation_type="sum_agg",
            field_name="tokens",
            filters=BillableMetricFilters(
                __root__=[BillableMetricFilter(key="model", values=["gpt-4o", "gpt-4o-mini"])]
            ),
        ),
    )
    await b.call(
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
                        properties={"amount": "0.001"},
                        filters=ChargeFilters(
                            __root__=[
                                ChargeFilter(
                                    values={"model": ["gpt-4o"]}, properties={"amount": "0.01"}
                                )
                            ]
                        ),
                    )
                ]
            ),
        ),
    )
    await b.call(
        c.subscriptions.create,
        Subscription(
            external_customer_id="acme",
            plan_code="pro",
            external_id="sub_1",
            billing_time="calendar",
            subscription_at="2026-11-01T00:00:00Z",
        ),
    )


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
    event = Event(
        transaction_id="tx_1",
        external_subscription_id="sub_1",
        code="tokens",
        timestamp=1763800000,
        properties={"tokens": 120, "model": "gpt-4o"},
    )
    first = await billing.call(billing.client.events.create, event)
    second = await billing.call(billing.client.events.create, event)
    assert first.transaction_id == second.transaction_id == "tx_1"
    assert first.timestamp.startswith("2025-11-22T")
    assert await billing.event_count(transaction_id="tx_1") == 1
    no_timestamp = Event(
        transaction_id="tx_2",
        external_subscription_id="sub_1",
        code="tokens",
        timestamp="1763800000.5",
    )
    await billing.call(billing.client.events.create, no_timestamp)
    assert await billing.event_count() == 2


async def test_an_event_naming_unknown_metric_or_subscription_is_refused(billing: Billing) -> None:
    await setup_catalog(billing)
    bad_code = {
        "event": {"transaction_id": "t", "external_subscription_id": "sub_1", "code": "nope"}
    }
    response = await billing.post("/api/v1/events", bad_code)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_errors" and "code" in body["error_details"]
    bad_sub = {
        "event": {"transaction_id": "t", "external_subscription_id": "ghost", "code": "tokens"}
    }
    response = await billing.post("/api/v1/events", bad_sub)
    assert response.status_code == 422
    assert "external_subscription_id" in response.json()["error_details"]
    with pytest.raises(LagoApiError) as raised:
        await billing.call(
            billing.client.events.create,
            Event(transaction_id="t", external_subscription_id="sub_1", code="nope"),
        )
    assert raised.value.status_code == 422
    assert await billing.event_count() == 0


async def test_a_batch_with_a_bad_item_is_refused_whole_with_each_error_by_index(
    billing: Billing,
) -> None:
    await setup_catalog(billing)
    good = [
        Event(
            transaction_id=f"b{i}",
            external_subscription_id="sub_1",
            code="tokens",
            properties={"tokens": i},
        )
        for i in range(3)
    ]
    await billing.call(billing.client.events.batch_create, BatchEvent(events=good))
    assert await billing.event_count() == 3
    body = {
        "events": [
            {"transaction_id": "b0", "external_subscription_id": "sub_1", "code": "tokens"},
            {"transaction_id": "b9", "external_subscription_id": "sub_1", "code": "nope"},
            {
                "transaction_id": "b10",
                "external_subscription_id": "sub_1",
                "code": "tokens",
                "timestamp": "yesterday",
            },
            {"transaction_id": "b11", "external_subscription_id": "sub_1", "code": "tokens"},
            {"transaction_id": "b11", "external_subscription_id": "sub_1", "code": "tokens"},
        ]
    }
    response = await billing.post("/api/v1/events/batch", body)
    assert response.status_code == 422
    result = response.json()
    assert result["error_details"] == {
        "1": {"code": ["billable_metric_not_found"]},
        "2": {"timestamp": ["invalid_format"]},
    }
    assert await billing.event_count() == 3  # nothing of the refused batch
    body["events"] = [body["events"][i] for i in (0, 3, 4)]  # the corrected batch, re-sent
    response = await billing.post("/api/v1/events/batch", body)
    assert response.status_code == 200
    assert [e["transaction_id"] for e in response.json()["events"]] == ["b0", "b11", "b11"]
    assert await billing.event_count() == 4  # neither b0 nor b11 twice
    too_many = {"events": [body["events"][0]] * 1001}
    assert (await billing.post("/api/v1/events/batch", too_many)).status_code == 422


async def test_billing_endpoints_need_the_admin_key(billing: Billing) -> None:
    response = await billing.post(
        "/api/v1/customers", {"customer": {"external_id": "x"}}, key="wrong"
    )
    assert response.status_code == 401
