"""Readers for Lago's JSON objects (plans, charges, metrics, subscriptions): each returns the
typed value or raises a 422 naming the field. No defaults beyond Lago's, no coercion of types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from faregate.billing.errors import BillingValidationError


def mapping(value: object, field: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise BillingValidationError(field, "value_is_invalid")
    return value


def sequence(data: Mapping[str, object], field: str) -> Sequence[object]:
    """A JSON array (absent or null reads as empty)."""
    value = data.get(field) or []
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise BillingValidationError(field, "value_is_invalid")
    return value


# The length of the VARCHAR columns codes, names and external ids are stored in: a longer
# value is refused here (422) rather than by the database (PostgreSQL's error, a 500).
MAX_TEXT = 255


def required_str(data: Mapping[str, object], field: str, *, limit: int | None = MAX_TEXT) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value:
        raise BillingValidationError(field, "value_is_mandatory")
    if limit is not None and len(value) > limit:
        raise BillingValidationError(field, "value_is_invalid")
    return value


def optional_str(
    data: Mapping[str, object], field: str, *, limit: int | None = MAX_TEXT
) -> str | None:
    """`limit`: None for a text kept inside a JSON document (a description), not a column."""
    value = data.get(field)
    if value is not None and not isinstance(value, str):
        raise BillingValidationError(field, "value_is_invalid")
    if value and limit is not None and len(value) > limit:
        raise BillingValidationError(field, "value_is_invalid")
    return value or None


def flag(data: Mapping[str, object], field: str, default: bool = False) -> bool:
    value = data.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BillingValidationError(field, "value_is_invalid")
    return value


def optional_int(data: Mapping[str, object], field: str) -> int | None:
    value = data.get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BillingValidationError(field, "value_is_invalid")
    return value


def timestamp(data: Mapping[str, object], field: str) -> datetime | None:
    """An ISO 8601 datetime (a datetime passes through); naive values are refused later."""
    value = data.get(field)
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise BillingValidationError(field, "invalid_format") from None


def required_timestamp(data: Mapping[str, object], field: str) -> datetime:
    value = timestamp(data, field)
    if value is None:
        raise BillingValidationError(field, "value_is_mandatory")
    return value


def choice(
    data: Mapping[str, object], field: str, allowed: Sequence[str], default: str | None = None
) -> str | None:
    """One of `allowed` (Lago's enums), `default` when absent."""
    value = data.get(field)
    if value is None:
        return default
    if not isinstance(value, str) or value not in allowed:
        raise BillingValidationError(field, "value_is_invalid")
    return value


def is_default(value: object) -> bool:
    """Absent, null, false or empty: what a Lago client sends for a field it does not use."""
    if value is None or value is False:
        return True
    if isinstance(value, str | list | tuple):
        return not value
    if isinstance(value, Mapping):
        return all(is_default(v) for v in value.values())
    return False


def refuse_unsupported(
    data: Mapping[str, object], fields: tuple[str, ...], prefix: str = ""
) -> None:
    """422 `value_is_not_supported` for the first of `fields` given a non-default value:
    a Lago field faregate does not implement is refused, never accepted and ignored."""
    for name in fields:
        if not is_default(data.get(name)):
            raise BillingValidationError(
                f"{prefix}{name}",
                "value_is_not_supported",
                f"{prefix}{name} is not supported by this server; leave it out.",
            )
