"""Request field checks shared by the wire formats; each failure is a 400 `MockError` that
names the offending field, as the real providers do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faregate.mockprovider.dialects import MockError


def required_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise MockError(400, f"'{key}' is a required property and must be a string.", param=key)
    return value


def required_list(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if not isinstance(value, list) or not value:
        raise MockError(400, f"'{key}' must be a non-empty array.", param=key)
    return value


def optional_int(
    body: Mapping[str, Any], key: str, *, minimum: int = 1, maximum: int | None = None
) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MockError(400, f"'{key}' must be an integer of at least {minimum}.", param=key)
    if maximum is not None and value > maximum:
        raise MockError(400, f"'{key}' must be at most {maximum}.", param=key)
    return value


def string_list(value: Any, key: str, *, limit: int | None = None) -> tuple[str, ...]:
    """A string or list of strings (as `stop` accepts) as a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MockError(400, f"'{key}' must be a string or an array of strings.", param=key)
    if limit is not None and len(value) > limit:
        raise MockError(400, f"'{key}' accepts at most {limit} items.", param=key)
    return tuple(value)


def mapping(value: Any, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MockError(400, f"'{key}' must be an object.", param=key)
    return value
