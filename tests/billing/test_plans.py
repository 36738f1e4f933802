"""Plans, charges and subscriptions: Lago JSON in, Lago's rules enforced, errors naming fields."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from faregate.billing.charge_models.package import PackageProperties
from faregate.billing.charge_models.standard import StandardProperties
from faregate.billing.errors import BillingNotFound, BillingValidationError
from faregate.billing.filters import ALL_FILTER_VALUES, ChargeFilter, best_filter
from faregate.billing.metrics import BillableMetric
from faregate.billing.plans import Charge, Plan, Subscription, validate_charge
from faregate.errors import FaregateError
from tests.billing.mistral import mistral_metric, mistral_plan


def test_the_mistral_plan_parses_from_lago_json_and_fits_its_metric() -> None:
    plan = mistral_plan()
    plan.validate_metrics({"tokens": mistral_metric()})
    charge = plan.charge("tokens")
    assert charge.properties == PackageProperties(D(0), 1_000_000, 0)
    assert [f.display_name() for f in charge.filters][:2] == [
        "mistral-large input",
        "mistral-large output",
    ]
    assert charge.filters[0].properties == PackageProperties(D(4), 1_000_000, 0)
    assert plan.amount == D("20.00")
    assert Charge.from_dict(charge.to_dict()) == charge


def test_an_event_falls_into_the_matching_filter_with_the_most_keys() -> None:
    props = StandardProperties(D(1))
    by_model = ChargeFilter({"model": ["mistral-large"]}, props)
    by_model_and_type = ChargeFilter({"model": ["mistral-large"], "type": ["output"]}, props)
    filters = [by_model, by_model_and_type]
    assert best_filter(filters, {"model": "mistral-large", "type": "output"}) is by_model_and_type
    assert best_filter(filters, {"model": "mistral-large", "type": "input"}) is by_model
    assert best_filter(filters, {"model": "codestral"}) is None  # the default bucket


def test_a_charge_filter_key_names_its_values_canonically() -> None:
    one = ChargeFilter({"type": "input", "model": ["b", "a"]}, StandardProperties(D(1)))
    assert one.key == '{"model":["a","b"],"type":["input"]}'


def test_charge_filters_must_use_the_metric_keys_and_values() -> None:
    metric = mistral_metric()
    unknown_key = mistral_plan(
        charge={
            "filters": [
                {"values": {"region": ["eu"]}, "properties": {"amount": "1", "package_size": 1}}
            ]
        }
    )
    with pytest.raises(BillingValidationError) as caught:
        validate_charge(unknown_key.charge("tokens"), metric)
    assert caught.value.field == "filters.values.region"
    unknown_value = mistral_plan(
        charge={
            "filters": [
                {"values": {"model": ["gpt-5"]}, "properties": {"amount": "1", "package_size": 1}}
            ]
        }
    )
    with pytest.raises(BillingValidationError):
        validate_charge(unknown_value.charge("tokens"), metric)
    every_model = mistral_plan(
        charge={
            "filters": [
                {
                    "values": {"model": [ALL_FILTER_VALUES]},
                    "properties": {"amount": "1", "package_size": 1},
                }
            ]
        }
    )
    validate_charge(every_model.charge("tokens"), metric)


def test_filter_properties_are_validated_with_the_charge_model() -> None:
    with pytest.raises(BillingValidationError) as caught:
        mistral_plan(
            charge={
                "filters": [{"values": {"model": ["mistral-large"]}, "properties": {"amount": "1"}}]
            }
        )
    assert caught.value.field == "package_size"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (
            {
                "charge_model": "volume",
                "pay_in_advance": True,
                "properties": {
                    "volume_ranges": [
                        {
                            "from_value": 0,
                            "to_value": None,
                            "per_unit_amount": "1",
                            "flat_amount": "0",
                        }
                    ]
                },
                "filters": [],
            },
            "pay_in_advance",
        ),
        ({"pay_in_advance": True, "min_amount_cents": 100}, "min_amount_cents"),
        ({"min_amount_cents": -1}, "min_amount_cents"),
        ({"min_amount_cents": 2**63}, "min_amount_cents"),
        ({"charge_model": "dynamic"}, "charge_model"),
        ({"billable_metric_code": ""}, "billable_metric_code"),
    ],
)
def test_invalid_charges_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(BillingValidationError) as caught:
        mistral_plan(charge=changes)
    assert caught.value.field == field


def test_a_charge_refuses_properties_of_another_model() -> None:
    with pytest.raises(BillingValidationError) as caught:
        Charge("c", "tokens", "standard", PackageProperties(D(1), 10))
    assert caught.value.field == "properties"


def test_percentage_on_latest_and_per_event_pricing_on_max_are_refused() -> None:
    latest = BillableMetric("gauge", "Gauge", "latest_agg", field_name="v")
    with pytest.raises(BillingValidationError) as caught:
        validate_charge(
            Charge.from_dict(
                {
                    "billable_metric_code": "gauge",
                    "charge_model": "percentage",
                    "properties": {"rate": "1"},
                }
            ),
            latest,
        )
    assert caught.value.field == "billable_metric"
    peak = BillableMetric("peak", "Peak", "max_agg", field_name="v")
    per_event = Charge.from_dict(
        {
            "billable_metric_code": "peak",
            "charge_model": "percentage",
            "properties": {"rate": "1", "free_units_per_events": 2},
        }
    )
    with pytest.raises(BillingValidationError):
        validate_charge(per_event, peak)


def test_pay_in_advance_needs_a_payable_in_advance_aggregation() -> None:
    peak = BillableMetric("peak", "Peak", "max_agg", field_name="v")
    charge = Charge.from_dict(
        {
            "billable_metric_code": "peak",
            "charge_model": "standard",
            "properties": {"amount": "1"},
            "pay_in_advance": True,
        }
    )
    with pytest.raises(BillingValidationError) as caught:
        validate_charge(charge, peak)
    assert (caught.value.field, caught.value.error_code) == (
        "pay_in_advance",
        "invalid_aggregation_type",
    )


def test_a_pay_in_advance_charge_is_refused_because_it_would_never_be_invoiced() -> None:
    tokens = BillableMetric("tokens", "Tokens", "sum_agg", field_name="tokens")
    charge = Charge.from_dict(
        {
            "billable_metric_code": "tokens",
            "charge_model": "standard",
            "properties": {"amount": "1"},
            "pay_in_advance": True,
        }
    )
    with pytest.raises(BillingValidationError) as caught:
        validate_charge(charge, tokens)
    assert (caught.value.field, caught.value.error_code) == ("pay_in_advance", "not_supported")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"interval": "daily"}, "interval"),
        ({"amount_cents": -5}, "amount_cents"),
        ({"amount_cents": 2**63}, "amount_cents"),
        ({"amount_currency": "EURO"}, "amount_currency"),
        ({"code": ""}, "code"),
    ],
)
def test_invalid_plans_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(BillingValidationError) as caught:
        mistral_plan(None, **changes)
    assert caught.value.field == field


def test_duplicate_charge_codes_are_refused() -> None:
    charge = mistral_plan().charges[0]
    with pytest.raises(BillingValidationError) as caught:
        Plan("p", "P", "monthly", 0, "EUR", charges=(charge, charge))
    assert caught.value.field == "charges"


def _on_tokens(*codes: str | None) -> Plan:
    charges = [
        {
            "billable_metric_code": "tokens",
            "charge_model": "standard",
            "properties": {"amount": "1"},
        }
        | ({"code": code} if code else {})
        for code in codes
    ]
    return Plan.from_dict(
        {
            "code": "p",
            "name": "P",
            "interval": "monthly",
            "amount_cents": 0,
            "amount_currency": "USD",
            "charges": charges,
        }
    )


@pytest.mark.parametrize(
    ("given", "codes"),
    [
        ((None, None), ["tokens", "tokens_2"]),  # was 422 duplicated_charge_code
        ((None, None, None), ["tokens", "tokens_2", "tokens_3"]),
        (("tokens_7", None, None), ["tokens_7", "tokens", "tokens_8"]),
        ((None, "tokens"), ["tokens_2", "tokens"]),  # a code sent is never taken from it
        (("support", None), ["support", "tokens"]),
    ],
)
def test_charges_sent_without_a_code_take_their_metrics_suffixed_as_lago_does(
    given: tuple[str | None, ...], codes: list[str]
) -> None:
    plan = _on_tokens(*given)
    assert [c.code for c in plan.charges] == codes
    assert Plan.from_dict(_plan_json(plan)).charges == plan.charges  # stored as given
    assert plan.charge(codes[-1]).code == codes[-1]


def _plan_json(plan: Plan) -> dict[str, object]:
    return {
        "code": plan.code,
        "name": plan.name,
        "interval": plan.interval,
        "amount_cents": plan.amount_cents,
        "amount_currency": plan.amount_currency,
        "charges": [c.to_dict() for c in plan.charges],
    }


def test_two_charges_sent_with_one_code_are_still_refused() -> None:
    with pytest.raises(BillingValidationError) as caught:
        _on_tokens("tokens", "tokens")
    assert (caught.value.field, caught.value.error_code) == ("charges", "duplicated_charge_code")


def test_unknown_charges_and_metrics_are_404() -> None:
    plan = mistral_plan()
    with pytest.raises(BillingNotFound) as caught:
        plan.charge("images")
    assert (caught.value.status, caught.value.code) == (404, "charge_not_found")
    with pytest.raises(BillingNotFound) as missing:
        plan.validate_metrics({})
    assert missing.value.code == "billable_metric_not_found"
    assert isinstance(missing.value, FaregateError)


def test_bill_charges_monthly_applies_to_longer_intervals_only() -> None:
    assert mistral_plan(interval="yearly", bill_charges_monthly=True).charges_interval == "monthly"
    assert mistral_plan(interval="weekly", bill_charges_monthly=True).charges_interval == "weekly"
    assert mistral_plan(interval="yearly").charges_interval == "yearly"


def test_subscription_from_lago_json() -> None:
    sub = Subscription.from_dict(
        {
            "external_id": "sub-1",
            "external_customer_id": "acme",
            "plan_code": "mistral",
            "subscription_at": "2025-01-31T00:00:00Z",
            "billing_time": "anniversary",
        }
    )
    assert sub.subscription_at == datetime(2025, 1, 31, tzinfo=UTC)
    assert (sub.billing_time, sub.status) == ("anniversary", "active")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"subscription_at": "2025-01-31T00:00:00"}, "subscription_at"),
        ({"subscription_at": "yesterday"}, "subscription_at"),
        ({"ending_at": "2025-01-01T00:00:00Z"}, "ending_at"),
        ({"billing_time": "weekly"}, "billing_time"),
        ({"external_customer_id": ""}, "external_customer_id"),
    ],
)
def test_invalid_subscriptions_name_the_field(changes: dict[str, object], field: str) -> None:
    data: dict[str, object] = {
        "external_id": "sub-1",
        "external_customer_id": "acme",
        "plan_code": "mistral",
        "subscription_at": "2025-01-31T00:00:00Z",
    }
    data.update(changes)
    with pytest.raises(BillingValidationError) as caught:
        Subscription.from_dict(data)
    assert caught.value.field == field


def test_billing_errors_render_as_openai_shaped_bodies() -> None:
    error = BillingValidationError("package_size", "invalid_package_size")
    assert error.body()["error"] == {
        "message": "package_size: invalid_package_size",
        "type": "invalid_request_error",
        "param": "package_size",
        "code": "validation_errors",
    }


def test_cents_past_what_a_bigint_holds_are_out_of_range() -> None:
    with pytest.raises(BillingValidationError) as caught:
        mistral_plan(None, amount_cents=2**63)
    assert (caught.value.field, caught.value.error_code) == (
        "amount_cents",
        "value_is_out_of_range",
    )
    assert mistral_plan(None, amount_cents=2**63 - 1).amount_cents == 2**63 - 1
