"""The Lago v1 catalog after creation, through the official lago-python-client against a real
gateway (SQLite and PostgreSQL): paginated lists, updates, deletions, subscription
termination and its final invoice, finding an event, refused pay-in-advance charges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import (
    BillableMetric,
    Charge,
    Charges,
    Customer,
    Event,
    Plan,
    Subscription,
)
from sqlalchemy import update

from faregate.store.tables.billing import invoices, plans
from faregate.store.tables.gateway import customers
from tests.api.conftest import Billing
from tests.api.test_billing_api import setup_catalog


async def refused(billing: Billing, fn: object, *args: object) -> tuple[int, dict[str, object]]:
    with pytest.raises(LagoApiError) as raised:
        await billing.call(fn, *args)
    return raised.value.status_code, raised.value.response


async def test_lists_page_with_lagos_meta(billing: Billing) -> None:
    await setup_catalog(billing)
    c = billing.client
    for code in ("basic", "team"):
        await billing.call(
            c.plans.create,
            Plan(name=code, code=code, interval="monthly", amount_cents=0, amount_currency="USD"),
        )
    first = await billing.call(c.plans.find_all, {"per_page": 2, "page": 1})
    second = await billing.call(c.plans.find_all, {"per_page": 2, "page": 2})
    assert [p.code for p in first["plans"]] == ["pro", "basic"]
    assert [p.code for p in second["plans"]] == ["team"]
    assert first["meta"] == {
        "current_page": 1,
        "next_page": 2,
        "prev_page": None,
        "total_pages": 2,
        "total_count": 3,
    }
    assert second["meta"] == {
        "current_page": 2,
        "next_page": None,
        "prev_page": 1,
        "total_pages": 2,
        "total_count": 3,
    }
    await billing.call(c.customers.create, Customer(external_id="beta"))
    customers = await billing.call(c.customers.find_all, {"per_page": 1, "page": 2})
    assert [x.external_id for x in customers["customers"]] == ["beta"]
    assert customers["meta"]["total_count"] == 2
    metrics = await billing.call(c.billable_metrics.find_all, {"per_page": 5})
    assert metrics["meta"]["total_count"] == 1 and metrics["meta"]["next_page"] is None
    response = await billing.get("/api/v1/plans?per_page=0")
    assert response.status_code == 422
    assert response.json()["error_details"] == {"per_page": ["value_is_invalid"]}


async def test_charges_carry_their_ids_and_an_update_keeps_them(billing: Billing) -> None:
    await setup_catalog(billing)
    c = billing.client
    metric = await billing.call(c.billable_metrics.find, "tokens")
    plan = await billing.call(c.plans.find, "pro")
    [charge] = plan.charges.__root__
    assert charge.lago_billable_metric_id == metric.lago_id
    assert charge.lago_id and charge.billable_metric_code == "tokens"
    updated = await billing.call(
        c.plans.update,
        Plan(
            name="Pro 2",
            amount_cents=1500,
            charges=Charges(
                __root__=[
                    Charge(
                        id=charge.lago_id,
                        billable_metric_id=metric.lago_id,
                        charge_model="standard",
                        properties={"amount": "0.002"},
                    )
                ]
            ),
        ),
        "pro",
    )
    assert (updated.name, updated.amount_cents) == ("Pro 2", 1500)
    [after] = updated.charges.__root__
    assert after.lago_id == charge.lago_id and after.properties == {"amount": "0.002"}
    assert after.filters.__root__ == []  # charges given replace the stored ones
    assert (await billing.call(c.plans.find, "pro")).amount_cents == 1500
    status, body = await refused(billing, c.plans.update, Plan(interval="yearly"), "pro")
    assert status == 422 and body["error_details"] == {"interval": ["plan_has_subscriptions"]}
    status, body = await refused(billing, c.plans.update, Plan(code="other"), "pro")
    assert body["error_details"] == {"code": ["value_is_immutable"]}


async def test_pages_of_rows_made_in_one_instant_neither_repeat_nor_skip(billing: Billing) -> None:
    c = billing.client
    codes = [f"plan_{n}" for n in range(5)]
    for code in codes:
        await billing.call(
            c.plans.create,
            Plan(name=code, code=code, interval="monthly", amount_cents=0, amount_currency="USD"),
        )
        await billing.call(c.customers.create, Customer(external_id=code))
    instant = datetime(2026, 1, 1, tzinfo=UTC)
    async with billing.engine.begin() as conn:
        await conn.execute(update(plans).values(created_at=instant))
        await conn.execute(update(customers).values(created_at=instant))
    for find_all, key in ((c.plans.find_all, "plans"), (c.customers.find_all, "customers")):
        seen = []
        for page in range(1, 6):
            rows = (await billing.call(find_all, {"per_page": 1, "page": page}))[key]
            seen += [row.code if key == "plans" else row.external_id for row in rows]
        assert sorted(seen) == codes


async def test_deleting_a_plan_terminates_its_subscriptions(billing: Billing) -> None:
    await setup_catalog(billing)
    c = billing.client
    deleted = await billing.call(c.plans.destroy, "pro")
    assert deleted.code == "pro"
    status, _ = await refused(billing, c.plans.find, "pro")
    assert status == 404
    assert (await billing.call(c.plans.find_all))["plans"] == []
    sub = await billing.call(c.subscriptions.find, "sub_1")
    assert sub.status == "terminated" and sub.terminated_at == sub.ending_at
    status, body = await refused(
        billing,
        c.plans.create,
        Plan(name="Pro", code="pro", interval="monthly", amount_cents=0, amount_currency="USD"),
    )
    assert status == 422 and body["error_details"] == {"code": ["value_already_exist"]}


async def test_a_charged_metric_keeps_its_aggregation_and_deleting_it_drops_its_charges(
    billing: Billing,
) -> None:
    await setup_catalog(billing)
    c = billing.client
    renamed = await billing.call(
        c.billable_metrics.update, BillableMetric(name="LLM tokens"), "tokens"
    )
    assert renamed.name == "LLM tokens" and renamed.field_name == "tokens"
    status, body = await refused(
        billing, c.billable_metrics.update, BillableMetric(field_name="words"), "tokens"
    )
    assert status == 422
    assert body["error_details"] == {"field_name": ["billable_metric_charged_by_plans"]}
    # The plan prices model gpt-4o: the value cannot go away while it does.
    response = await billing.put(
        "/api/v1/billable_metrics/tokens",
        {"billable_metric": {"filters": [{"key": "model", "values": ["gpt-4o-mini"]}]}},
    )
    assert response.status_code == 422
    assert response.json()["error_details"] == {"filters.values.model": ["invalid_filter_values"]}
    await billing.call(c.billable_metrics.destroy, "tokens")
    status, _ = await refused(billing, c.billable_metrics.find, "tokens")
    assert status == 404
    assert (await billing.call(c.plans.find, "pro")).charges.__root__ == []
    status, body = await refused(
        billing,
        c.events.create,
        Event(transaction_id="t1", external_subscription_id="sub_1", code="tokens"),
    )
    assert status == 422 and body["error_details"] == {"code": ["billable_metric_not_found"]}


async def test_a_metric_update_answers_and_bills_the_new_aggregation_type(
    billing: Billing,
) -> None:
    """The answer and every later read said the aggregation type the metric was created
    with, while current usage billed the new one."""
    c = billing.client
    await billing.call(c.customers.create, Customer(external_id="acme", currency="USD"))
    created = BillableMetric(
        name="Peak", code="peak", aggregation_type="sum_agg", field_name="tokens"
    )
    await billing.call(c.billable_metrics.create, created)
    counted = await billing.call(
        c.billable_metrics.update, BillableMetric(aggregation_type="count_agg"), "peak"
    )
    assert (counted.aggregation_type, counted.field_name) == ("count_agg", None)
    update = BillableMetric(aggregation_type="max_agg", field_name="tokens")
    updated = await billing.call(c.billable_metrics.update, update, "peak")
    assert (updated.aggregation_type, updated.field_name) == ("max_agg", "tokens")
    assert (await billing.call(c.billable_metrics.find, "peak")).aggregation_type == "max_agg"
    [listed] = (await billing.call(c.billable_metrics.find_all))["billable_metrics"]
    assert listed.aggregation_type == "max_agg"
    await billing.call(
        c.plans.create,
        Plan(
            name="Peak",
            code="peak",
            interval="monthly",
            amount_cents=0,
            amount_currency="USD",
            charges=Charges(
                __root__=[
                    Charge(
                        billable_metric_id=updated.lago_id,
                        charge_model="standard",
                        properties={"amount": "1"},
                    )
                ]
            ),
        ),
    )
    await billing.call(
        c.subscriptions.create,
        Subscription(external_customer_id="acme", plan_code="peak", external_id="sub_peak"),
    )
    for n, tokens in enumerate((3, 5, 2)):
        event = Event(
            transaction_id=f"t{n}",
            external_subscription_id="sub_peak",
            code="peak",
            properties={"tokens": tokens},
        )
        await billing.call(c.events.create, event)
    usage = await billing.call(c.customers.current_usage, "acme", "sub_peak")
    [charge] = usage.charges_usage
    assert charge.billable_metric.aggregation_type == "max_agg"
    assert Decimal(charge.units) == 5 and usage.amount_cents == 500


async def test_two_charges_on_one_metric_without_codes_are_both_billed(billing: Billing) -> None:
    """Lago names them `tokens` and `tokens_2`; faregate gave both the metric's code and
    refused the plan (422 duplicated_charge_code)."""
    await setup_catalog(billing)  # acme, USD, and the `tokens` metric
    c = billing.client
    metric = await billing.call(c.billable_metrics.find, "tokens")

    def per_token(amount: str, **fields: object) -> Charge:
        return Charge(
            billable_metric_id=metric.lago_id,
            charge_model="standard",
            properties={"amount": amount},
            **fields,
        )

    plan = await billing.call(
        c.plans.create,
        Plan(
            name="Two",
            code="two",
            interval="monthly",
            amount_cents=0,
            amount_currency="USD",
            charges=Charges(__root__=[per_token("0.01"), per_token("0.02")]),
        ),
    )
    first, second = plan.charges.__root__
    assert (first.code, second.code) == ("tokens", "tokens_2")
    assert first.lago_id != second.lago_id
    await billing.call(
        c.subscriptions.create,
        Subscription(external_customer_id="acme", plan_code="two", external_id="sub_two"),
    )
    event = Event(
        transaction_id="t2",
        external_subscription_id="sub_two",
        code="tokens",
        properties={"tokens": 100, "model": "gpt-4o"},
    )
    await billing.call(c.events.create, event)
    usage_path = "/api/v1/customers/acme/current_usage?external_subscription_id=sub_two"
    usage = (await billing.get(usage_path)).json()["customer_usage"]
    by_code = {u["charge"]["code"]: u["amount_cents"] for u in usage["charges_usage"]}
    assert by_code == {"tokens": 100, "tokens_2": 200} and usage["amount_cents"] == 300
    only = (await billing.get(usage_path + "&charge_code=tokens_2")).json()["customer_usage"]
    assert [u["charge"]["lago_id"] for u in only["charges_usage"]] == [second.lago_id]
    # A charge named by its id keeps its code; a new one takes the next free.
    kept = per_token("0.03", id=second.lago_id)
    updated = await billing.call(
        c.plans.update, Plan(charges=Charges(__root__=[kept, per_token("0.04")])), "two"
    )
    kept_charge, new_charge = updated.charges.__root__
    assert (kept_charge.code, kept_charge.lago_id) == ("tokens_2", second.lago_id)
    assert new_charge.code == "tokens"


async def test_deleting_a_customer_terminates_its_subscriptions(billing: Billing) -> None:
    await setup_catalog(billing)
    c = billing.client
    gone = await billing.call(c.customers.destroy, "acme")
    assert gone.external_id == "acme"
    status, _ = await refused(billing, c.customers.find, "acme")
    assert status == 404
    assert (await billing.call(c.subscriptions.find, "sub_1")).status == "terminated"
    status, body = await refused(billing, c.customers.create, Customer(external_id="acme"))
    assert status == 422 and body["error_details"] == {"external_id": ["value_already_exist"]}


async def test_a_subscription_is_found_updated_and_terminated(billing: Billing) -> None:
    await setup_catalog(billing)
    c = billing.client
    found = await billing.call(c.subscriptions.find, "sub_1")
    assert (found.status, found.plan_code, found.terminated_at) == ("active", "pro", None)
    ending = (datetime.now(UTC) + timedelta(days=400)).replace(microsecond=0)
    updated = await billing.call(
        c.subscriptions.update, Subscription(name="Main", ending_at=ending.isoformat()), "sub_1"
    )
    assert updated.name == "Main" and updated.ending_at == ending.isoformat().replace("+00:00", "Z")
    status, body = await refused(
        billing, c.subscriptions.update, Subscription(ending_at="2020-01-01T00:00:00Z"), "sub_1"
    )
    assert status == 422 and body["error_details"] == {"ending_at": ["invalid_date"]}
    terminated = await billing.call(c.subscriptions.destroy, "sub_1")
    assert terminated.status == "terminated" and terminated.terminated_at
    assert terminated.canceled_at is None  # only a pending subscription is canceled
    again = await billing.call(c.subscriptions.destroy, "sub_1")
    assert again.terminated_at == terminated.terminated_at
    assert (await billing.call(c.subscriptions.find_all))["subscriptions"] == []
    listed = await billing.call(c.subscriptions.find_all, {"status[]": "terminated"})
    assert [s.external_id for s in listed["subscriptions"]] == ["sub_1"]
    status, _ = await refused(billing, c.subscriptions.find, "ghost")
    assert status == 404


async def test_a_terminated_subscription_invoices_its_final_partial_period(
    billing: Billing,
) -> None:
    await setup_catalog(billing)  # $10/month, 0.01 per gpt-4o token, 0.001 for others
    c = billing.client
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    await billing.call(c.customers.create, Customer(external_id="zed", currency="USD"))
    await billing.call(
        c.subscriptions.create,
        Subscription(
            external_customer_id="zed",
            plan_code="pro",
            external_id="sub_z",
            billing_time="calendar",
            subscription_at=start.isoformat(),
        ),
    )
    await billing.call(
        c.events.create,
        Event(
            transaction_id="z1",
            external_subscription_id="sub_z",
            code="tokens",
            timestamp=int(start.timestamp()),
            properties={"tokens": 250, "model": "gpt-4o"},
        ),
    )
    terminated = await billing.call(c.subscriptions.destroy, "sub_z")
    ended = datetime.fromisoformat(terminated.terminated_at)
    await billing.event_count()  # the writer has stored the event
    run = await billing.post("/api/v1/billing_runs", {})
    assert run.status_code == 200
    invoices = await billing.call(c.invoices.find_all, {"external_subscription_id": "sub_z"})
    [invoice] = invoices["invoices"]
    days_in_month = ((start + timedelta(days=32)).replace(day=1) - start).days
    days_billed = (ended.date() - start.date()).days + 1  # a started day counts whole
    fee = (Decimal(1000) * days_billed / days_in_month).quantize(Decimal(1), ROUND_HALF_UP)
    by_kind = {f.item.type: f.amount_cents for f in invoice.fees.__root__}
    assert by_kind == {"subscription": int(fee), "charge": 250}  # 250 tokens x $0.01
    assert invoice.total_amount_cents == int(fee) + 250
    [period] = invoice.billing_periods.__root__
    assert period.subscription_to_datetime.startswith(ended.strftime("%Y-%m-%dT%H:%M:%S"))
    # Lago's termination invoice: a subscription invoice, its reason subscription_terminating
    # (it said subscription_periodic).
    assert (invoice.invoice_type, period.invoicing_reason) == (
        "subscription",
        "subscription_terminating",
    )


async def test_an_event_is_found_by_its_transaction_id(billing: Billing) -> None:
    await setup_catalog(billing)
    c = billing.client
    await billing.call(
        c.events.create,
        Event(
            transaction_id="tx_9",
            external_subscription_id="sub_1",
            code="tokens",
            timestamp=1763800000,
            properties={"tokens": 7, "model": "gpt-4o"},
        ),
    )
    found = await billing.call(c.events.find, "tx_9")  # right away: not written yet
    assert (found.transaction_id, found.code, found.properties) == (
        "tx_9",
        "tokens",
        {"tokens": 7, "model": "gpt-4o"},
    )
    assert found.timestamp.startswith("2025-11-22T") and found.external_subscription_id == "sub_1"
    status, _ = await refused(billing, c.events.find, "missing")
    assert status == 404


async def test_a_pay_in_advance_charge_is_refused_naming_the_field(billing: Billing) -> None:
    await setup_catalog(billing)
    c = billing.client
    metric = await billing.call(c.billable_metrics.find, "tokens")
    status, body = await refused(
        billing,
        c.plans.create,
        Plan(
            name="Prepaid",
            code="prepaid",
            interval="monthly",
            amount_cents=0,
            amount_currency="USD",
            charges=Charges(
                __root__=[
                    Charge(
                        billable_metric_id=metric.lago_id,
                        charge_model="standard",
                        pay_in_advance=True,
                        properties={"amount": "1"},
                    )
                ]
            ),
        ),
    )
    assert status == 422 and body["error_details"] == {"pay_in_advance": ["not_supported"]}


async def test_a_subscription_past_its_ending_at_is_terminated_and_billed_to_it(
    billing: Billing,
) -> None:
    await setup_catalog(billing)  # $10/month
    c = billing.client
    this_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (this_month - timedelta(days=1)).replace(day=1)  # the 1st of last month
    ending = start + timedelta(days=10)  # the 11th, 00:00: ten whole days billed
    await billing.call(
        c.subscriptions.create,
        Subscription(
            external_customer_id="acme",
            plan_code="pro",
            external_id="sub_end",
            billing_time="calendar",
            subscription_at=start.isoformat(),
            ending_at=ending.isoformat(),
        ),
    )
    assert (await billing.call(c.subscriptions.find, "sub_end")).status == "active"
    assert (await billing.post("/api/v1/billing_runs", {})).status_code == 200
    ended = await billing.call(c.subscriptions.find, "sub_end")
    assert ended.status == "terminated" and ended.terminated_at == ended.ending_at
    assert datetime.fromisoformat(ended.terminated_at) == ending
    [invoice] = (await billing.call(c.invoices.find_all, {"external_subscription_id": "sub_end"}))[
        "invoices"
    ]
    days_in_month = (this_month - start).days
    fee = (Decimal(1000) * 10 / days_in_month).quantize(Decimal(1), ROUND_HALF_UP)
    assert [f.amount_cents for f in invoice.fees.__root__] == [int(fee)]
    assert invoice.billing_periods.__root__[0].invoicing_reason == "subscription_terminating"
    # A final period invoiced as periodic before that reason existed is not invoiced again.
    async with billing.engine.begin() as conn:
        await conn.execute(update(invoices).values(billing_reason="subscription_periodic"))
    assert (await billing.post("/api/v1/billing_runs", {})).json()["billing_run"]["created"] == []


async def test_a_subscription_id_taken_by_another_customer_is_refused(billing: Billing) -> None:
    await setup_catalog(billing)  # sub_1: acme on pro
    c = billing.client
    await billing.call(c.customers.create, Customer(external_id="zed", currency="USD"))
    resent = await billing.call(
        c.subscriptions.create,
        Subscription(external_customer_id="acme", plan_code="pro", external_id="sub_1"),
    )
    assert (resent.external_id, resent.external_customer_id) == ("sub_1", "acme")
    for customer, plan in (("zed", "pro"), ("acme", "other")):
        status, body = await refused(
            billing,
            c.subscriptions.create,
            Subscription(external_customer_id=customer, plan_code=plan, external_id="sub_1"),
        )
        assert status == 422
        assert body["error_details"] == {"external_id": ["value_already_exist"]}
    subs = await billing.call(c.subscriptions.find_all, {"external_customer_id": "zed"})
    assert subs["subscriptions"] == []
    kept = await billing.call(c.subscriptions.find, "sub_1")
    assert (kept.external_customer_id, kept.plan_code) == ("acme", "pro")
