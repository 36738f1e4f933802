"""Values past what the columns and sums behind them hold are refused with a 422 naming the
field, never accepted to fail later: an event amount too large for PostgreSQL's NUMERIC(40,15)
used to fail the insert of every batch it was in (no later event or request record was
stored), a metric value of 1e400 broke the sums of current usage, and a 256-character
external id was PostgreSQL's error (a 500)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import orjson
import pytest

from faregate.api.common import dumps
from tests.api.conftest import Billing
from tests.api.test_billing_api import setup_catalog


def _refused(response: httpx.Response, details: dict[str, Any]) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error_details"] == details


def _event(transaction_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event": {
            "transaction_id": transaction_id,
            "external_subscription_id": "sub_1",
            "code": "tokens",
            "properties": {"tokens": 10, "model": "gpt-4o"},
            **fields,
        }
    }


@pytest.mark.parametrize(
    ("fields", "details"),
    [
        (
            {"precise_total_amount_cents": "1e25"},
            {"precise_total_amount_cents": ["value_is_out_of_range"]},
        ),
        (
            {"precise_total_amount_cents": "-" + "9" * 30},
            {"precise_total_amount_cents": ["value_is_out_of_range"]},
        ),
        (
            {"properties": {"tokens": "1e400", "model": "gpt-4o"}},
            {"properties.tokens": ["value_is_out_of_range"]},
        ),
        (
            {"properties": {"tokens": 10**25, "model": "gpt-4o"}},
            {"properties.tokens": ["value_is_out_of_range"]},
        ),
    ],
)
async def test_an_event_number_too_large_to_store_or_sum_is_refused(
    billing: Billing, fields: dict[str, Any], details: dict[str, Any]
) -> None:
    await setup_catalog(billing)
    _refused(await billing.post("/api/v1/events", _event("big", **fields)), details)
    batch = {"events": [_event("ok")["event"], _event("big2", **fields)["event"]]}
    _refused(await billing.post("/api/v1/events/batch", batch), {"1": details})
    # The largest amount that fits is stored, and so is what comes after it.
    largest = "9" * 25 + "." + "9" * 15
    fits = _event("fits", precise_total_amount_cents=largest)
    fits["event"]["properties"]["tokens"] = "9" * 12
    stored = await billing.post("/api/v1/events", fits)
    assert stored.status_code == 200, stored.text
    assert (await billing.post("/api/v1/events", _event("after"))).status_code == 200
    assert await billing.event_count() == 2
    usage = await billing.get("/api/v1/customers/acme/current_usage?external_subscription_id=sub_1")
    assert usage.status_code == 200, usage.text


@pytest.mark.parametrize(
    "amount",
    ["12345678901234567890.123456789012345", "9" * 25 + "." + "9" * 15, "0.1", "-7"],
)
async def test_an_events_precise_amount_reads_back_exactly(billing: Billing, amount: str) -> None:
    """SQLite kept it as a float: the first came back as 12345678901234567168."""
    await setup_catalog(billing)
    event = _event("exact", precise_total_amount_cents=amount)
    assert (await billing.post("/api/v1/events", event)).status_code == 200
    await billing.event_count()  # stored, not only journaled
    got = await billing.get("/api/v1/events/exact")
    assert got.status_code == 200, got.text
    assert got.json()["event"]["precise_total_amount_cents"] == amount


async def test_current_usage_past_64_bits_of_cents_is_answered_exactly(billing: Billing) -> None:
    """orjson holds integers to 64 bits: this answer was a 500."""
    await setup_catalog(billing)  # gpt-4o tokens at $0.01 each
    tokens = 10**24  # within what an event may carry
    event = _event("huge")
    event["event"]["properties"]["tokens"] = tokens
    assert (await billing.post("/api/v1/events", event)).status_code == 200
    usage = await billing.get("/api/v1/customers/acme/current_usage?external_subscription_id=sub_1")
    assert usage.status_code == 200, usage.text
    body = usage.json()["customer_usage"]
    assert body["amount_cents"] == tokens  # $0.01 a token: one cent each
    assert body["amount_cents"] > 2**63
    assert body["from_datetime"].endswith("Z") or "+00:00" in body["from_datetime"]


def test_an_answer_past_64_bits_keeps_orjsons_text_for_everything_else() -> None:
    moment = datetime(2026, 12, 5, 6, 7, 8, 9, tzinfo=UTC)
    small = {"at": moment, "day": moment.date(), "id": UUID(int=7), "n": 1}
    big = {**small, "n": 2**64}
    assert dumps(big) == orjson.dumps(small).replace(b'"n":1', b'"n":' + str(2**64).encode())


@pytest.mark.parametrize(
    ("path", "root", "body", "field"),
    [
        ("/api/v1/customers", "customer", {"external_id": "c" * 256}, "external_id"),
        (
            "/api/v1/customers",
            "customer",
            {"external_id": "c", "timezone": "Mars/Olympus"},
            "timezone",
        ),
        (
            "/api/v1/subscriptions",
            "subscription",
            {"external_customer_id": "acme", "plan_code": "pro", "external_id": "s" * 256},
            "external_id",
        ),
        (
            "/api/v1/billable_metrics",
            "billable_metric",
            {"name": "n" * 256, "code": "n", "aggregation_type": "count_agg"},
            "name",
        ),
        (
            "/api/v1/wallets",
            "wallet",
            {"external_customer_id": "acme", "rate_amount": "1", "name": "w" * 256},
            "name",
        ),
    ],
)
async def test_a_name_an_id_or_a_timezone_its_column_cannot_hold_is_refused(
    billing: Billing, path: str, root: str, body: dict[str, Any], field: str
) -> None:
    await setup_catalog(billing)
    _refused(await billing.post(path, {root: body}), {field: ["value_is_invalid"]})
    fits = {**body, field: "Europe/Paris" if field == "timezone" else body[field][:255]}
    assert (await billing.post(path, {root: fits})).status_code == 200


def _plan(code: str, amount_cents: int, charge_amount: str) -> dict[str, Any]:
    return {
        "plan": {
            "code": code,
            "name": code,
            "interval": "monthly",
            "amount_cents": amount_cents,
            "amount_currency": "USD",
            "charges": [
                {
                    "billable_metric_code": "tokens",
                    "charge_model": "standard",
                    "properties": {"amount": charge_amount},
                }
            ],
        }
    }


@pytest.mark.parametrize(
    ("amount_cents", "charge_amount", "details"),
    [
        (2**63, "1", {"amount_cents": ["value_is_out_of_range"]}),
        (0, "1e400", {"amount": ["value_is_out_of_range"]}),
        (0, "1" + "0" * 25, {"amount": ["value_is_out_of_range"]}),
    ],
)
async def test_a_plan_amount_no_invoice_could_hold_is_refused(
    billing: Billing, amount_cents: int, charge_amount: str, details: dict[str, Any]
) -> None:
    # Such a plan used to be stored: a 500 from the BIGINT column, or every usage read of its
    # subscriptions failing on the charge's amount.
    await setup_catalog(billing)
    _refused(
        await billing.post("/api/v1/plans", _plan("huge", amount_cents, charge_amount)), details
    )
    assert (await billing.get("/api/v1/plans/huge")).status_code == 404
    largest = _plan("largest", 2**63 - 1, "9" * 24 + "." + "9" * 10)
    stored = await billing.post("/api/v1/plans", largest)
    assert stored.status_code == 200, stored.text
    assert stored.json()["plan"]["amount_cents"] == 2**63 - 1


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/plans?page=99999999999999999999",  # an offset past 64 bits: was a 500
        "/api/v1/plans?page=%C2%B2",  # '²' passes str.isdigit, not int(): was a 500
        "/api/v1/customers?per_page=%C2%B2",
        "/api/v1/invoices?page=1000000001",
        "/api/v1/invoices?per_page=0",
        "/api/v1/webhooks?per_page=%C2%B2",
    ],
)
async def test_a_page_number_no_list_can_start_at_is_refused(billing: Billing, path: str) -> None:
    name = "per_page" if "per_page" in path else "page"
    _refused(await billing.get(path), {name: ["value_is_invalid"]})


async def test_the_last_page_that_can_be_asked_for_is_an_empty_page(billing: Billing) -> None:
    await setup_catalog(billing)
    reply = await billing.get("/api/v1/plans?page=1000000000&per_page=1000")
    assert reply.status_code == 200, reply.text
    assert reply.json()["plans"] == []
    assert (await billing.get("/api/v1/plans?page=&per_page=")).status_code == 200


@pytest.mark.parametrize(
    ("function", "precision"), [("round", 100_000), ("round", 10**9), ("ceil", -25)]
)
async def test_a_rounding_precision_faregate_cannot_apply_is_refused(
    billing: Billing, function: str, precision: int
) -> None:
    """Such a metric was stored: its current usage was a 500 (decimal.InvalidOperation) and
    every billing run failed for its subscriptions."""
    await setup_catalog(billing)
    rounding = {"rounding_function": function, "rounding_precision": precision}
    metric = {"code": "rounded", "name": "Rounded", "aggregation_type": "count_agg"}
    details = {"rounding_precision": ["value_is_out_of_range"]}
    _refused(
        await billing.post("/api/v1/billable_metrics", {"billable_metric": {**metric, **rounding}}),
        details,
    )
    assert (await billing.get("/api/v1/billable_metrics/rounded")).status_code == 404
    stored = await billing.post("/api/v1/billable_metrics", {"billable_metric": metric})
    assert stored.status_code == 200, stored.text
    update = {"billable_metric": rounding}
    _refused(await billing.put("/api/v1/billable_metrics/rounded", update), details)
    got = await billing.get("/api/v1/billable_metrics/rounded")
    assert got.json()["billable_metric"]["rounding_precision"] is None
    bound = {"billable_metric": {**rounding, "rounding_precision": 24 if precision > 0 else -24}}
    assert (await billing.put("/api/v1/billable_metrics/rounded", bound)).status_code == 200


async def test_a_metric_rounded_at_24_decimals_is_billed(billing: Billing) -> None:
    await setup_catalog(billing)
    rounding = {"rounding_function": "round", "rounding_precision": 24}
    metric = {"code": "calls", "name": "Calls", "aggregation_type": "count_agg", **rounding}
    assert (
        await billing.post("/api/v1/billable_metrics", {"billable_metric": metric})
    ).status_code == 200
    plan = _plan("per_call", 0, "0.5")
    plan["plan"]["charges"][0]["billable_metric_code"] = "calls"
    assert (await billing.post("/api/v1/plans", plan)).status_code == 200
    sub = {"external_customer_id": "acme", "plan_code": "per_call", "external_id": "sub_calls"}
    assert (await billing.post("/api/v1/subscriptions", {"subscription": sub})).status_code == 200
    call = {"transaction_id": "c1", "external_subscription_id": "sub_calls", "code": "calls"}
    assert (await billing.post("/api/v1/events", {"event": call})).status_code == 200
    usage = await billing.get(
        "/api/v1/customers/acme/current_usage?external_subscription_id=sub_calls"
    )
    assert usage.status_code == 200, usage.text
    assert usage.json()["customer_usage"]["amount_cents"] == 50
