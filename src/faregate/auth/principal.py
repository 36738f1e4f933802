"""The principal a request acts as: who pays, which team, which key, and the key's policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


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

    def allows(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    @property
    def max_price(self) -> Decimal | None:
        value = self.settings.get("max_price")
        return Decimal(str(value)) if value is not None else None
