"""Errors of the price catalog. A missing or unusable price is always an error the caller
sees: nothing here ever prices unknown usage at zero."""

from __future__ import annotations

from faregate.config import ConfigError
from faregate.errors import FaregateError


class PriceNotFound(FaregateError):
    """No price version of this model is in force at the instant asked for."""

    status = 500
    type = "api_error"
    code = "price_not_found"


class UnpricedUsage(FaregateError):
    """The price exists but cannot price this usage (an image size, a step count, a
    service tier or seconds that the catalog entry does not cover)."""

    status = 500
    type = "api_error"
    code = "usage_not_priced"


class PriceCatalogError(ConfigError):
    """A catalog file or override is invalid; the message names the entry."""

    code = "price_catalog_invalid"
