"""Field parsers for price entries: exact decimals, counts, dates and clock times, each
raising PriceCatalogError that names the entry and the field."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from faregate.pricing.errors import PriceCatalogError

_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


def fail(where: str, message: str) -> PriceCatalogError:
    return PriceCatalogError(f"{where}: {message}")


def to_decimal(value: Any, where: str, field: str) -> Decimal:
    """A non-negative exact amount. Floats (from a YAML loader that made them) are read
    through their shortest repr, which is the literal that was typed."""
    if isinstance(value, bool) or value is None:
        raise fail(where, f"{field} must be a number, got {value!r}")
    try:
        if isinstance(value, Decimal):
            result = value
        elif isinstance(value, int):
            result = Decimal(value)
        elif isinstance(value, float):
            result = Decimal(repr(value))
        elif isinstance(value, str):
            result = Decimal(value.strip())
        else:
            raise fail(where, f"{field} must be a number, got {value!r}")
    except InvalidOperation:
        raise fail(where, f"{field} must be a number, got {value!r}") from None
    if not result.is_finite() or result < 0:
        raise fail(where, f"{field} must be a finite number >= 0, got {value!r}")
    return result


def to_count(value: Any, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise fail(where, f"{field} must be a positive integer, got {value!r}")
    return value


def to_text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(where, f"{field} must be a non-empty string, got {value!r}")
    return value.strip()


def to_instant(value: Any, where: str, field: str) -> datetime:
    """A date (midnight UTC), an aware datetime, or a naive one taken as UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise fail(where, f"{field} must be an ISO date or datetime, got {value!r}") from None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise fail(where, f"{field} must be a date or datetime, got {value!r}")


def to_minute(value: Any, where: str, field: str) -> int:
    """Minutes after midnight of "HH:MM"; "24:00" is midnight."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise fail(where, f'{field} must be a quoted time like "16:30" (YAML read {value})')
    match = _CLOCK.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise fail(where, f'{field} must be a time "HH:MM", got {value!r}')
    hour, minute = int(match.group(1)), int(match.group(2))
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        raise fail(where, f"{field} is not a time of day: {value!r}")
    return (hour * 60 + minute) % 1440


def to_mapping(value: Any, where: str, field: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise fail(where, f"{field} must be a mapping, got {type(value).__name__}")
    return value


def to_list(value: Any, where: str, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise fail(where, f"{field} must be a list, got {type(value).__name__}")
    return value


def check_keys(raw: dict[Any, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise fail(where, f"unknown field(s) {', '.join(unknown)}")
