"""Billing's errors: 422 validation failures that name the offending field, 404 for unknown
billing objects, 409 for finalized invoices. Nothing here knows HTTP or Lago's JSON shape."""

from __future__ import annotations

from faregate.errors import FaregateError


class BillingError(FaregateError):
    """Base of every expected billing failure."""

    status = 422
    type = "invalid_request_error"
    code = "billing_error"


class BillingValidationError(BillingError):
    """A billing object or input is invalid; `field` and `error_code` map onto Lago's
    `error_details: {field: [error_code]}` (e.g. `{"package_size": ["invalid_package_size"]}`)."""

    status = 422
    code = "validation_errors"

    def __init__(self, field: str, error_code: str, message: str | None = None) -> None:
        super().__init__(message or f"{field}: {error_code}", param=field)
        self.field = field
        self.error_code = error_code


class BillingNotFound(BillingError):
    """An unknown billable metric, plan, charge or filter (Lago code `<resource>_not_found`)."""

    status = 404
    code = "not_found"

    def __init__(self, resource: str, key: str) -> None:
        super().__init__(f"{resource} {key!r} not found", code=f"{resource}_not_found")
        self.resource = resource
        self.key = key


class BillingNotAllowed(BillingError):
    """An action the object's state does not allow (Lago's 405 `MethodNotAllowedFailure`,
    e.g. `no_active_subscription` for the current usage of a subscription not running)."""

    status = 405

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or code, code=code)


class InvoiceNotEditable(BillingError):
    """A finalized invoice is never recomputed; corrections go through credit notes."""

    status = 409
    code = "invoice_not_editable"
