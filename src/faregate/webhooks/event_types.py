"""The webhook types an endpoint may subscribe to, and how a requested list is read, as Lago's
`WebhookEndpoint` reads it (`normalize_event_types`, `validate_event_types`). Data only."""

from __future__ import annotations

import json
from collections.abc import Iterable

# Lago's webhook types (config/webhook_event_types.yml and SendWebhookJob, getlago/lago-api),
# every one a Lago endpoint accepts, whether or not faregate sends it.
LAGO = frozenset(
    {
        "alert.triggered",
        "billable_metric.created",
        "billable_metric.deleted",
        "billable_metric.updated",
        "credit_note.created",
        "credit_note.generated",
        "credit_note.provider_refund_failure",
        "customer.accounting_provider_created",
        "customer.accounting_provider_error",
        "customer.checkout_url_generated",
        "customer.created",
        "customer.crm_provider_created",
        "customer.crm_provider_error",
        "customer.payment_provider_created",
        "customer.payment_provider_error",
        "customer.tax_provider_error",
        "customer.updated",
        "customer.vies_check",
        "dunning_campaign.finished",
        "event.error",
        "events.errors",
        "feature.created",
        "feature.deleted",
        "feature.updated",
        "fee.created",
        "fee.tax_provider_error",
        "integration.provider_error",
        "invoice.created",
        "invoice.deleted",
        "invoice.drafted",
        "invoice.generated",
        "invoice.one_off_created",
        "invoice.paid_credit_added",
        "invoice.payment_dispute_lost",
        "invoice.payment_failure",
        "invoice.payment_overdue",
        "invoice.payment_status_updated",
        "invoice.ready_to_finalize",
        "invoice.resynced",
        "invoice.voided",
        "order.created",
        "order.executed",
        "order_form.created",
        "order_form.expired",
        "order_form.signed",
        "order_form.voided",
        "payment.requires_action",
        "payment.succeeded",
        "payment_provider.error",
        "payment_receipt.created",
        "payment_receipt.generated",
        "payment_request.created",
        "payment_request.payment_failure",
        "payment_request.payment_status_updated",
        "plan.created",
        "plan.deleted",
        "plan.updated",
        "quote.approved",
        "quote.created",
        "quote.voided",
        "subscription.canceled",
        "subscription.incomplete",
        "subscription.started",
        "subscription.terminated",
        "subscription.termination_alert",
        "subscription.trial_ended",
        "subscription.updated",
        "subscription.usage_threshold_reached",
        "wallet.created",
        "wallet.depleted_ongoing_balance",
        "wallet.terminated",
        "wallet.updated",
        "wallet_transaction.created",
        "wallet_transaction.payment_failure",
        "wallet_transaction.payment_failure_after_settlement",
        "wallet_transaction.updated",
    }
)
# Types faregate sends that Lago does not have.
FAREGATE = frozenset({"invoice.finalized"})
KNOWN = LAGO | FAREGATE

EVERY = "*"  # `["*"]`: every type, as no list


def normalized(types: Iterable[object]) -> list[str]:
    """Lago's reading of a list: each type trimmed and lower-cased, blanks and repeats
    dropped, in the order given."""
    kept: list[str] = []
    for item in types:
        if item is None:
            continue
        name = (item if isinstance(item, str) else json.dumps(item)).strip().lower()
        if name and name not in kept:
            kept.append(name)
    return kept


def unknown(types: Iterable[str]) -> list[str]:
    return [t for t in types if t not in KNOWN]


def invalid_types_message(types: list[str]) -> str:
    """Lago's error for them, verbatim: `Contains invalid types: ["wrong.type"]` (a Ruby
    array's inspect)."""
    shown = ", ".join(json.dumps(t, ensure_ascii=False) for t in types)
    return f"Contains invalid types: [{shown}]"
