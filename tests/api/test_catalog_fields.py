"""Lago catalog fields faregate does not implement are refused with a 422 naming the field,
as docs/wallets.md's rule says, where they were accepted and ignored (a plan's trial period,
even "abc", a minimum commitment, a subscription's plan overrides...). Their defaults pass."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Billing
from tests.api.test_billing_api import setup_catalog

METRIC = {"name": "Seats", "code": "seats", "aggregation_type": "sum_agg", "field_name": "n"}
PLAN = {
    "name": "Team",
    "code": "team",
    "interval": "monthly",
    "amount_cents": 0,
    "amount_currency": "USD",
}


async def _charge(b: Billing, **fields: Any) -> dict[str, Any]:
    metric = (await b.get("/api/v1/billable_metrics/tokens")).json()["billable_metric"]
    return {
        "billable_metric_id": metric["lago_id"],
        "charge_model": "standard",
        "properties": {"amount": "1"},
        **fields,
    }


def _refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error_details"] == {field: ["value_is_not_supported"]}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"expression": "round(event.properties.n * 2)"}, "expression"),
    ],
)
async def test_a_metric_field_not_implemented_is_refused(
    billing: Billing, fields: dict[str, Any], field: str
) -> None:
    _refused(
        await billing.post("/api/v1/billable_metrics", {"billable_metric": {**METRIC, **fields}}),
        field,
    )
    created = await billing.post(
        "/api/v1/billable_metrics", {"billable_metric": {**METRIC, "expression": None}}
    )
    assert created.status_code == 200, created.text
    _refused(
        await billing.put("/api/v1/billable_metrics/seats", {"billable_metric": fields}), field
    )


async def test_a_weighted_sum_needs_its_weighted_interval_as_in_lago(billing: Billing) -> None:
    weighted = {**METRIC, "aggregation_type": "weighted_sum_agg"}
    response = await billing.post("/api/v1/billable_metrics", {"billable_metric": weighted})
    assert response.status_code == 422, response.text
    assert response.json()["error_details"] == {"weighted_interval": ["value_is_invalid"]}
    weighted["weighted_interval"] = "seconds"
    response = await billing.post("/api/v1/billable_metrics", {"billable_metric": weighted})
    assert response.status_code == 200, response.text
    renamed = await billing.put(
        "/api/v1/billable_metrics/seats", {"billable_metric": {"name": "Seat-hours"}}
    )
    assert renamed.status_code == 200, renamed.text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"trial_period": "abc"}, "trial_period"),
        ({"trial_period": 14}, "trial_period"),
        ({"minimum_commitment": {"amount_cents": 1000}}, "minimum_commitment"),
        ({"usage_thresholds": [{"amount_cents": 5000}]}, "usage_thresholds"),
        ({"tax_codes": ["vat"]}, "tax_codes"),
    ],
)
async def test_a_plan_field_not_implemented_is_refused(
    billing: Billing, fields: dict[str, Any], field: str
) -> None:
    await setup_catalog(billing)
    _refused(await billing.post("/api/v1/plans", {"plan": {**PLAN, **fields}}), field)
    _refused(await billing.put("/api/v1/plans/pro", {"plan": fields}), field)


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"invoiceable": False}, "charges.invoiceable"), ({"prorated": True}, "charges.prorated")],
)
async def test_a_charge_field_not_implemented_is_refused(
    billing: Billing, fields: dict[str, Any], field: str
) -> None:
    await setup_catalog(billing)
    charge = await _charge(billing, **fields)
    _refused(await billing.post("/api/v1/plans", {"plan": {**PLAN, "charges": [charge]}}), field)


async def test_the_defaults_of_fields_not_implemented_pass(billing: Billing) -> None:
    await setup_catalog(billing)
    charge = await _charge(billing, invoiceable=True, prorated=False, tax_codes=[])
    neutral = {
        "trial_period": 0,
        "minimum_commitment": None,
        "usage_thresholds": [],
        "tax_codes": [],
        "charges": [charge],
    }
    created = await billing.post("/api/v1/plans", {"plan": {**PLAN, **neutral}})
    assert created.status_code == 200, created.text
    subscription = {
        "external_customer_id": "acme",
        "plan_code": "team",
        "external_id": "sub_team",
        "plan_overrides": None,
    }
    created = await billing.post("/api/v1/subscriptions", {"subscription": subscription})
    assert created.status_code == 200, created.text


async def test_plan_overrides_on_a_subscription_are_refused(billing: Billing) -> None:
    await setup_catalog(billing)
    subscription = {
        "external_customer_id": "acme",
        "plan_code": "pro",
        "external_id": "sub_o",
        "plan_overrides": {"amount_cents": 500},
    }
    _refused(
        await billing.post("/api/v1/subscriptions", {"subscription": subscription}),
        "plan_overrides",
    )
    _refused(
        await billing.put(
            "/api/v1/subscriptions/sub_1", {"subscription": {"plan_overrides": {"amount_cents": 5}}}
        ),
        "plan_overrides",
    )
