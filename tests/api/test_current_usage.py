"""Current usage through the official Lago client: per charge and per filter, from rollups
plus the events the writer has not stored yet, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

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


def _month_start() -> str:
    now = datetime.now(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).isoformat()


async def _mistral_like_catalog(b: Billing) -> None:
    c = b.client
    await b.call(c.customers.create, Customer(external_id="acme", currency="USD"))
    tokens = await b.call(
        c.billable_metrics.create,
        BillableMetric(
            name="Tokens",
            code="tokens",
            aggregation_type="sum_agg",
            field_name="tokens",
            filters=BillableMetricFilters(
                __root__=[
                    BillableMetricFilter(key="model", values=["large", "small"]),
                    BillableMetricFilter(key="type", values=["input", "output"]),
                ]
            ),
        ),
    )
    calls = await b.call(
        c.billable_metrics.create,
        BillableMetric(name="Calls", code="calls", aggregation_type="count_agg"),
    )
    per_million = [
        ("large", "input", "4"),
        ("large", "output", "12"),
        ("small", "input", "1"),
    ]
    await b.call(
        c.plans.create,
        Plan(
            name="Mistral",
            code="mistral",
            interval="monthly",
            amount_cents=0,
            amount_currency="USD",
            charges=Charges(
                __root__=[
                    Charge(
                        billable_metric_id=tokens.lago_id,
                        charge_model="standard",
                        properties={"amount": "0"},
                        filters=ChargeFilters(
                            __root__=[
                                ChargeFilter(
                                    values={"model": [m], "type": [t]},
                                    properties={"amount": str(float(p) / 1_000_000)},
                                )
                                for m, t, p in per_million
                            ]
                        ),
                    ),
                    Charge(
                        billable_metric_id=calls.lago_id,
                        charge_model="package",
                        properties={"amount": "1", "package_size": 100, "free_units": 0},
                    ),
                ]
            ),
        ),
    )
    await b.call(
        c.subscriptions.create,
        Subscription(
            external_customer_id="acme",
            plan_code="mistral",
            external_id="sub_m",
            billing_time="calendar",
            subscription_at=_month_start(),
        ),
    )


def _event(tx: str, code: str, **props: object) -> Event:
    return Event(
        transaction_id=tx,
        external_subscription_id="sub_m",
        code=code,
        timestamp=int(time.time()) - 5,
        properties=props,
    )


async def _usage(b: Billing):
    return await b.call(b.client.customers.current_usage, "acme", "sub_m")


def _by_values(charge) -> dict:
    return {
        tuple(sorted((k, tuple(v)) for k, v in (f.values or {}).items())): f for f in charge.filters
    }


async def test_current_usage_prices_each_filter_from_rollups_and_the_unwritten_tail(
    billing: Billing,
) -> None:
    await _mistral_like_catalog(billing)
    events = [
        _event("t1", "tokens", model="large", type="input", tokens=500_000),
        _event("t2", "tokens", model="large", type="output", tokens=250_000),
        _event("t3", "tokens", model="small", type="input", tokens=2_000_000),
        _event("t4", "tokens", model="small", type="output", tokens=7),  # default bucket
        *[_event(f"c{i}", "calls") for i in range(101)],
    ]
    await billing.call(billing.client.events.batch_create, BatchEvent(events=events))
    before_flush = await _usage(billing)  # nothing written yet: all from the writer's tail
    await billing.event_count()  # flushes the writer
    after_flush = await _usage(billing)
    # A re-sent event is acknowledged and changes nothing.
    await billing.call(billing.client.events.create, events[0])
    resent = await _usage(billing)
    for usage in (before_flush, after_flush, resent):
        tokens, calls = usage.charges_usage
        assert tokens.units == "2750007" and tokens.events_count == 4
        by = _by_values(tokens)
        large_in = by[(("model", ("large",)), ("type", ("input",)))]
        assert (large_in.units, large_in.amount_cents) == ("500000", 200)  # 0.5M x $4
        large_out = by[(("model", ("large",)), ("type", ("output",)))]
        assert (large_out.units, large_out.amount_cents) == ("250000", 300)  # 0.25M x $12
        small_in = by[(("model", ("small",)), ("type", ("input",)))]
        assert (small_in.units, small_in.amount_cents) == ("2000000", 200)  # 2M x $1
        assert by[()].units == "7" and by[()].amount_cents == 0
        assert tokens.amount_cents == 700
        assert (calls.units, calls.amount_cents, calls.filters) == ("101", 200, [])
        assert usage.amount_cents == usage.total_amount_cents == 900
        assert usage.currency == "USD"


async def test_current_usage_of_an_unknown_subscription_is_a_404(billing: Billing) -> None:
    await _mistral_like_catalog(billing)
    with pytest.raises(LagoApiError) as raised:
        await billing.call(billing.client.customers.current_usage, "acme", "ghost")
    assert raised.value.status_code == 404
    with pytest.raises(LagoApiError) as raised:
        await billing.call(billing.client.customers.current_usage, "someone-else", "sub_m")
    assert raised.value.status_code == 404


async def test_current_usage_applies_the_invoices_tax_rate_unless_apply_taxes_is_false(
    billing: Billing,
) -> None:
    from dataclasses import replace
    from decimal import Decimal

    from faregate.api.state import SERVICES
    from tests.api.test_billing_api import setup_catalog

    invoicing = billing.runner.app[SERVICES].invoicing
    invoicing.settings = replace(invoicing.settings, tax_rate=Decimal("20"))  # billing.tax_rate
    await setup_catalog(billing)  # gpt-4o tokens at $0.01 each
    c = billing.client
    await billing.call(
        c.events.create,
        Event(
            transaction_id="t1",
            external_subscription_id="sub_1",
            code="tokens",
            timestamp=int(time.time()),
            properties={"tokens": 1234, "model": "gpt-4o"},
        ),
    )
    taxed = await billing.call(c.customers.current_usage, "acme", "sub_1")
    # 1234 x $0.01 = $12.34; 20 % of it is 246.8 cents, rounded once to 247
    assert (taxed.amount_cents, taxed.taxes_amount_cents, taxed.total_amount_cents) == (
        1234,
        247,
        1481,
    )
    untaxed = await billing.call(c.customers.current_usage, "acme", "sub_1", "false")
    assert (untaxed.taxes_amount_cents, untaxed.total_amount_cents) == (0, 1234)


async def test_current_usage_sums_values_with_more_than_28_digits_exactly(
    billing: Billing,
) -> None:
    """Python's default 28 digits made 10^4 + 1.1234...0123 end in ...568; the rollups, the
    writer's tail and PostgreSQL's own sums now keep every digit."""
    await _mistral_like_catalog(billing)
    long_value = "1.123456789012345678901234567890123"
    events = [
        _event("x1", "tokens", model="large", type="input", tokens=10_000),
        _event("x2", "tokens", model="large", type="input", tokens=long_value),
        _event("x3", "tokens", model="large", type="input", tokens="1e-40"),
    ]
    await billing.call(billing.client.events.batch_create, BatchEvent(events=events))
    expected = "10001.123456789012345678901234567890123" + "0" * 6 + "1"
    for flushed in (False, True):
        if flushed:
            await billing.event_count()
        tokens, _ = (await _usage(billing)).charges_usage
        large_in = _by_values(tokens)[(("model", ("large",)), ("type", ("input",)))]
        assert tokens.units == large_in.units == expected, flushed
    # 41 decimals are more than billing sums exactly: refused, naming the property.
    too_fine = await billing.post(
        "/api/v1/events",
        {"event": {**events[0].dict(), "transaction_id": "x4", "properties": {"tokens": "1e-41"}}},
    )
    assert too_fine.status_code == 422, too_fine.text
    assert too_fine.json()["error_details"] == {"properties.tokens": ["value_is_out_of_range"]}


async def _cli_usage(billing: Billing, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    """`faregate usage ARGS` on the server's database: exit code, JSON answer, stderr."""
    import contextlib
    import io

    import orjson

    from faregate.api.state import SERVICES
    from faregate.cli import main

    await billing.runner.app[SERVICES].writer.flush()  # the command line reads the database
    url = str(billing.engine.url.render_as_string(hide_password=False))
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(["usage", *args, "--database-url", url])

    code = await asyncio.to_thread(run)
    body = orjson.loads(out.getvalue())["customer_usage"] if code == 0 else None
    return code, body, err.getvalue()


async def test_the_usage_command_answers_what_the_api_answers(billing: Billing) -> None:
    """One code path: the same usage for a running subscription, the same refusals for a
    terminated one and for another customer's (the command printed their usage)."""
    from tests.api.test_billing_api import setup_catalog

    await setup_catalog(billing)  # sub_1: acme
    c = billing.client
    await billing.call(c.customers.create, Customer(external_id="zed", currency="USD"))
    await billing.call(
        c.events.create,
        Event(
            transaction_id="t1",
            external_subscription_id="sub_1",
            code="tokens",
            timestamp=int(time.time()),
            properties={"tokens": 42, "model": "gpt-4o"},
        ),
    )
    code, cli, _ = await _cli_usage(billing, "--customer", "acme", "--subscription", "sub_1")
    api = await billing.get("/api/v1/customers/acme/current_usage?external_subscription_id=sub_1")
    assert code == 0 and api.status_code == 200
    assert cli is not None and cli.pop("external_subscription_id") == "sub_1"
    assert cli["amount_cents"] == 42
    assert cli == api.json()["customer_usage"]
    code, default, _ = await _cli_usage(billing, "--customer", "acme")  # the active one
    assert code == 0 and default is not None and default["amount_cents"] == 42

    api = await billing.get("/api/v1/customers/zed/current_usage?external_subscription_id=sub_1")
    assert (api.status_code, api.json()["code"]) == (404, "subscription_not_found")
    code, _, err = await _cli_usage(billing, "--customer", "zed", "--subscription", "sub_1")
    assert code == 2 and "subscription 'sub_1' not found" in err

    await billing.call(c.subscriptions.destroy, "sub_1")
    api = await billing.get("/api/v1/customers/acme/current_usage?external_subscription_id=sub_1")
    assert (api.status_code, api.json()["code"]) == (405, "no_active_subscription")
    code, _, err = await _cli_usage(billing, "--customer", "acme", "--subscription", "sub_1")
    assert code == 2 and "no_active_subscription" in err
