"""The services an application serves with, built once by app.py and found by handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.auth.principal import Principal
from faregate.auth.service import KeyService
from faregate.config import Settings
from faregate.gateway.pipeline import Gateway
from faregate.metering.writer import UsageWriter
from faregate.webhooks import Webhooks


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    keys: KeyService
    router: Any
    gateway: Gateway
    writer: UsageWriter
    started_at: int
    webhooks: Webhooks
    health: Any = None
    invoicing: Any = None  # faregate.billing.invoicing.Invoicing
    wallets: Any = None  # faregate.wallets.runtime.WalletRuntime, when wallets are enabled
    components: dict[str, Any] = field(default_factory=dict)

    async def admin(self, key: str | None) -> Principal:
        from faregate.auth.errors import AdminOnly

        principal = await self.keys.authenticate(key)
        if not principal.is_admin:
            raise AdminOnly("This endpoint needs the admin key.")
        return principal


SERVICES = web.AppKey("services", Services)
