"""Lago's rule that a customer bills in one currency: its subscriptions' plans, its wallets
and its invoices all share the customer's `currency`. Pure functions over currency codes;
callers read what is in use and store what these return."""

from __future__ import annotations

from collections.abc import Set

from faregate.billing.errors import BillingValidationError


def is_currency_code(value: object) -> bool:
    """Three ASCII letters (ISO 4217's shape), in either case."""
    return isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha()


def currency_of_subscriber(
    customer_currency: str | None, plan_currency: str, in_use: Set[str]
) -> str:
    """The customer's currency once it subscribes to a plan in `plan_currency` (Lago's
    `Customers::UpdateCurrencyService`): a customer without one takes the plan's, unless
    what it already has is in another; one with another is refused."""
    if customer_currency is None and not in_use - {plan_currency}:
        return plan_currency
    if customer_currency != plan_currency:
        raise BillingValidationError("currency", "currencies_does_not_match")
    return plan_currency


def check_currency_change(current: str | None, wanted: str, in_use: Set[str]) -> None:
    """A customer's currency changes only while nothing of it is in another currency (Lago:
    only while it has no subscription, invoice or wallet)."""
    if wanted != current and in_use - {wanted}:
        raise BillingValidationError("currency", "currencies_does_not_match")
