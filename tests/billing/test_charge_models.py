"""Every charge model against amounts computed by hand, and Lago's validation rules."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from faregate.billing import charge_models
from faregate.billing.aggregate import Aggregate
from faregate.billing.charge_models import graduated, package, percentage, standard, volume
from faregate.billing.errors import BillingValidationError
from faregate.billing.marginal import marginal_fee


def units(n: str | int) -> Aggregate:
    return Aggregate(units=D(n), event_count=1)


# standard


def test_standard_charge_prices_each_unit_at_the_amount() -> None:
    props = standard.validate({"amount": "0.0000025"})
    # 1,234,567 tokens x 0.0000025 = 3.0864175
    assert standard.fee(units(1_234_567), props) == D("3.0864175")


def test_standard_charge_of_no_usage_is_zero() -> None:
    assert standard.fee(Aggregate(), standard.validate({"amount": "3"})) == 0


# package


def test_package_charge_bills_a_whole_package_for_one_token_past_the_boundary() -> None:
    props = package.validate({"amount": "4", "package_size": 1_000_000, "free_units": 0})
    assert package.fee(units(1_000_000), props) == D(4)
    assert package.fee(units(1_000_001), props) == D(8)
    assert package.fee(units(1), props) == D(4)
    assert package.fee(units(0), props) == 0


def test_package_charge_bills_started_packages_after_free_units() -> None:
    props = package.validate({"amount": "4", "package_size": 1_000_000, "free_units": 100})
    assert package.fee(units(100), props) == 0  # all free
    assert package.fee(units(101), props) == D(4)  # 1 paid unit starts a package
    assert package.fee(units(1_000_100), props) == D(4)  # exactly one package paid
    assert package.fee(units(1_000_101), props) == D(8)  # one token past it


def test_package_free_units_default_to_zero() -> None:
    assert package.validate({"amount": "1", "package_size": 10}).free_units == 0


# graduated

THREE_TIERS = {
    "graduated_ranges": [
        {"from_value": 0, "to_value": 100, "per_unit_amount": "0.10", "flat_amount": "1"},
        {"from_value": 101, "to_value": 1000, "per_unit_amount": "0.05", "flat_amount": "2"},
        {"from_value": 1001, "to_value": None, "per_unit_amount": "0.01", "flat_amount": "3"},
    ]
}


def test_graduated_charge_sums_three_tiers_with_their_flat_amounts() -> None:
    props = graduated.validate(THREE_TIERS)
    # tier 1: 100 x 0.10 + 1 = 11; tier 2: 900 x 0.05 + 2 = 47; tier 3: 500 x 0.01 + 3 = 8
    assert graduated.fee(units(1500), props) == D(66)


def test_graduated_charge_inside_the_first_tier_adds_only_its_flat_amount() -> None:
    props = graduated.validate(THREE_TIERS)
    assert graduated.fee(units(50), props) == D(6)  # 50 x 0.10 + 1
    assert graduated.fee(units(100), props) == D(11)  # the tier's last unit
    assert graduated.fee(units(0), props) == 0  # no usage reaches no tier


def test_graduated_charge_counts_a_fraction_past_a_bound_in_the_next_tier() -> None:
    props = graduated.validate(THREE_TIERS)
    # 11 for tier 1, then 0.5 x 0.05 + 2 for tier 2
    assert graduated.fee(units("100.5"), props) == D("13.025")


def test_graduated_adjacent_bounds_mean_the_same_tiers_as_stepped_bounds() -> None:
    adjacent = graduated.validate(
        {
            "graduated_ranges": [
                {"from_value": 0, "to_value": 100, "per_unit_amount": "0.10", "flat_amount": "1"},
                {
                    "from_value": 100,
                    "to_value": 1000,
                    "per_unit_amount": "0.05",
                    "flat_amount": "2",
                },
                {
                    "from_value": 1000,
                    "to_value": None,
                    "per_unit_amount": "0.01",
                    "flat_amount": "3",
                },
            ]
        }
    )
    stepped = graduated.validate(THREE_TIERS)
    for n in ("1", "100", "100.5", "1000", "1001", "1500"):
        assert graduated.fee(units(n), adjacent) == graduated.fee(units(n), stepped)


# volume

VOLUME = {
    "volume_ranges": [
        {"from_value": 0, "to_value": 100, "per_unit_amount": "1.00", "flat_amount": "0"},
        {"from_value": 101, "to_value": 1000, "per_unit_amount": "0.50", "flat_amount": "10"},
        {"from_value": 1001, "to_value": None, "per_unit_amount": "0.25", "flat_amount": "0"},
    ]
}


def test_volume_charge_prices_all_units_at_the_tier_of_the_total() -> None:
    props = volume.validate(VOLUME)
    assert volume.fee(units(100), props) == D(100)  # 100 x 1.00
    assert volume.fee(units(101), props) == D("60.50")  # 101 x 0.50 + 10
    assert volume.fee(units(1000), props) == D(510)  # 1000 x 0.50 + 10
    assert volume.fee(units(1001), props) == D("250.25")  # 1001 x 0.25
    assert volume.fee(units(0), props) == 0


def test_volume_charge_credits_back_when_crossing_into_a_cheaper_tier() -> None:
    props = volume.validate(VOLUME)
    # 100 units cost 100; the 101st moves everything to 0.50 + 10 flat = 60.50
    assert marginal_fee("volume", props, units(100), units(101)) == D("-39.50")


# percentage


def events(*values: str) -> Aggregate:
    return Aggregate.of_values(*(D(v) for v in values))


def test_percentage_charge_takes_the_rate_of_the_amount_plus_a_fixed_fee_per_event() -> None:
    props = percentage.validate({"rate": "2.5", "fixed_amount": "0.10"})
    # 600 x 2.5% = 15, plus 3 x 0.10
    assert percentage.fee(events("100", "200", "300"), props) == D("15.30")


def test_percentage_charge_with_free_events_bills_neither_rate_nor_fixed_fee_on_them() -> None:
    props = percentage.validate({"rate": "2.5", "fixed_amount": "0.10", "free_units_per_events": 2})
    # events 100 and 200 are free; 300 x 2.5% + 0.10 = 7.60; 400 x 2.5% + 0.10 = 10.10
    assert percentage.fee(events("100", "200", "300", "400"), props) == D("17.70")


def test_percentage_charge_with_free_units_bills_the_excess_of_the_event_crossing_them() -> None:
    props = percentage.validate(
        {"rate": "2.5", "fixed_amount": "0.10", "free_units_per_total_aggregation": "250"}
    )
    # 100 is free (150 left); 200 pays on 50: 1.25 + 0.10; 300 pays 7.50 + 0.10
    assert percentage.fee(events("100", "200", "300"), props) == D("8.95")


def test_percentage_free_units_without_fixed_fee_need_only_the_total() -> None:
    props = percentage.validate({"rate": "2.5", "free_units_per_total_aggregation": "250"})
    assert not percentage.needs_event_values(props)
    # (600 - 250) x 2.5%
    assert percentage.fee(Aggregate(units=D(600), event_count=3), props) == D("8.75")


def test_percentage_with_both_allowances_stops_at_the_first_exhausted() -> None:
    props = percentage.validate(
        {
            "rate": "2.5",
            "fixed_amount": "0.10",
            "free_units_per_events": 1,
            "free_units_per_total_aggregation": "250",
        }
    )
    # one free event (100); then 200 x 2.5% + 0.10 = 5.10 and 300 x 2.5% + 0.10 = 7.60
    assert percentage.fee(events("100", "200", "300"), props) == D("12.70")


def test_percentage_per_transaction_min_and_max_clamp_each_event() -> None:
    props = percentage.validate(
        {"rate": "1", "per_transaction_min_amount": "0.50", "per_transaction_max_amount": "3"}
    )
    # 0.10 -> 0.50 (min), 1.00 stays, 10.00 -> 3.00 (max)
    assert percentage.fee(events("10", "100", "1000"), props) == D("4.50")


def test_percentage_per_event_pricing_refuses_an_aggregate_without_event_values() -> None:
    props = percentage.validate({"rate": "1", "free_units_per_events": 1})
    with pytest.raises(BillingValidationError) as caught:
        percentage.fee(Aggregate(units=D(5), event_count=2), props)
    assert caught.value.field == "billable_metric"


# validation


@pytest.mark.parametrize(
    ("model", "properties", "field", "error_code"),
    [
        ("standard", {}, "amount", "invalid_amount"),
        ("standard", {"amount": 0.1}, "amount", "invalid_amount"),
        ("standard", {"amount": "-1"}, "amount", "invalid_amount"),
        ("standard", {"amount": "abc"}, "amount", "invalid_amount"),
        # Past what an invoice line can hold: refused, not kept to fail every usage read.
        ("standard", {"amount": "1e400"}, "amount", "value_is_out_of_range"),
        ("standard", {"amount": "1e25"}, "amount", "value_is_out_of_range"),
        (
            "package",
            {"amount": "1", "package_size": "1e30"},
            "package_size",
            "value_is_out_of_range",
        ),
        (
            "graduated",
            {
                "graduated_ranges": [
                    {"from_value": 0, "to_value": "1e30", "per_unit_amount": "1"},
                    {"from_value": "1e30", "to_value": None, "per_unit_amount": "1"},
                ]
            },
            "graduated_ranges[0].to_value",
            "value_is_out_of_range",
        ),
        ("package", {"amount": "1", "package_size": 0}, "package_size", "invalid_package_size"),
        ("package", {"amount": "1", "package_size": "1.5"}, "package_size", "invalid_package_size"),
        (
            "package",
            {"amount": "1", "package_size": 10, "free_units": -1},
            "free_units",
            "invalid_free_units",
        ),
        ("graduated", {}, "graduated_ranges", "missing_graduated_ranges"),
        (
            "graduated",
            {
                "graduated_ranges": [
                    {"from_value": 0, "to_value": 10, "per_unit_amount": "1", "flat_amount": "0"},
                    {
                        "from_value": 12,
                        "to_value": None,
                        "per_unit_amount": "1",
                        "flat_amount": "0",
                    },
                ]
            },
            "graduated_ranges[1].from_value",
            "invalid_graduated_ranges",
        ),
        (
            "graduated",
            {
                "graduated_ranges": [
                    {"from_value": 0, "to_value": 10, "per_unit_amount": "1", "flat_amount": "0"},
                ]
            },
            "graduated_ranges[0].to_value",
            "invalid_graduated_ranges",
        ),
        (
            "volume",
            {
                "volume_ranges": [
                    {"from_value": 0, "to_value": None, "per_unit_amount": "x", "flat_amount": "0"},
                ]
            },
            "volume_ranges[0].per_unit_amount",
            "invalid_amount",
        ),
        ("percentage", {}, "rate", "invalid_rate"),
        ("percentage", {"rate": "1", "fixed_amount": "-2"}, "fixed_amount", "invalid_fixed_amount"),
        (
            "percentage",
            {"rate": "1", "free_units_per_events": 0},
            "free_units_per_events",
            "invalid_free_units_per_events",
        ),
        (
            "percentage",
            {"rate": "1", "per_transaction_min_amount": "5", "per_transaction_max_amount": "1"},
            "per_transaction_max_amount",
            "per_transaction_max_lower_than_per_transaction_min",
        ),
    ],
)
def test_invalid_properties_name_the_field(
    model: str, properties: dict[str, object], field: str, error_code: str
) -> None:
    with pytest.raises(BillingValidationError) as caught:
        charge_models.get(model).validate(properties)
    assert caught.value.field == field
    assert caught.value.error_code == error_code
    assert caught.value.status == 422
    assert caught.value.param == field


def test_unknown_charge_model_is_a_validation_error_on_charge_model() -> None:
    with pytest.raises(BillingValidationError) as caught:
        charge_models.get("dynamic")
    assert caught.value.field == "charge_model"


@pytest.mark.parametrize(
    ("model", "properties"),
    [
        ("standard", {"amount": "0.0000025"}),
        ("package", {"amount": "4", "package_size": 1_000_000, "free_units": 10}),
        ("graduated", THREE_TIERS),
        ("volume", VOLUME),
        ("percentage", {"rate": "2.5", "fixed_amount": "0.1", "free_units_per_events": 3}),
    ],
)
def test_properties_round_trip_through_lago_json(model: str, properties: dict[str, object]) -> None:
    charge_model = charge_models.get(model)
    validated = charge_model.validate(properties)
    assert charge_model.validate(validated.to_dict()) == validated


def test_the_registry_holds_one_entry_per_model_named_as_in_lago() -> None:
    assert set(charge_models.CHARGE_MODELS) == {
        "standard",
        "package",
        "graduated",
        "volume",
        "percentage",
    }
    assert all(m.name == name for name, m in charge_models.CHARGE_MODELS.items())
    assert not charge_models.get("volume").pay_in_advance
