"""The principal a request acts as: who pays, which team, which key, and the key's policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from faregate.errors import InvalidRequest
from faregate.policy.ratelimit_rules import Limits

# A key's `settings` and their readers: `limits` (gateway/policy_stages, its own rpm / tpm /
# concurrency), `max_price` (routing's price ceiling), `cache`, `cache_nonzero_temperature`,
# `cache_images` (gateway/cache), `moderation` (policy ids it opts into). Other keys are kept.
_LIMITS = ("rpm", "tpm", "max_concurrent")
_FLAGS = ("cache", "cache_nonzero_temperature", "cache_images")


def check_settings(settings: dict[str, Any]) -> None:
    """Refuse, when a key is made or updated, settings its readers cannot use: every request
    with the key would fail instead (a 500). Raises InvalidRequest naming `settings.<field>`."""

    def bad(field: str, what: str) -> InvalidRequest:
        return InvalidRequest(f"'settings.{field}' must be {what}.", param=f"settings.{field}")

    limits = settings.get("limits")
    if limits is not None:
        if not isinstance(limits, dict):
            raise bad("limits", "an object")
        for name in _LIMITS:
            try:
                Limits(**{name: limits.get(name)})  # the rule the rate limiter applies
            except ValueError:
                raise bad(f"limits.{name}", "a positive integer") from None
    if settings.get("max_price") is not None:
        value = settings["max_price"]
        try:
            price = Decimal(str(value)) if isinstance(value, str | int | float) else None
        except InvalidOperation:
            price = None
        if isinstance(value, bool) or price is None or not price.is_finite() or price < 0:
            raise bad("max_price", "a non-negative decimal amount")
    for name in _FLAGS:
        if settings.get(name) is not None and not isinstance(settings[name], bool):
            raise bad(name, "true or false")
    moderation = settings.get("moderation")
    if moderation is not None and (
        not isinstance(moderation, list) or not all(isinstance(m, str) for m in moderation)
    ):
        raise bad("moderation", "a list of policy ids")


def unusable_settings(settings: dict[str, Any]) -> str | None:
    """What `check_settings` says of settings already stored, None when they are usable."""
    try:
        check_settings(settings)
    except InvalidRequest as err:
        return err.message
    return None


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    key_prefix: str
    customer_id: str | None = None
    external_customer_id: str | None = None
    team_id: str | None = None
    team_name: str | None = None
    external_subscription_id: str | None = None
    allowed_models: frozenset[str] | None = None
    tags: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None
    revoked: bool = False
    is_admin: bool = False
    # Why the stored settings cannot be used (`check_settings`' message), if they cannot:
    # such a key is refused (UnusableKeySettings) until an admin corrects them.
    unusable: str | None = None

    def allows(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    @property
    def max_price(self) -> Decimal | None:
        value = self.settings.get("max_price")
        return Decimal(str(value)) if value is not None else None
