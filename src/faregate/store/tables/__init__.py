"""All tables, one module per domain, on one MetaData. Import this to see the whole schema."""

from faregate.store.tables import billing, gateway, metering, wallets, webhooks
from faregate.store.tables.base import metadata

__all__ = ["billing", "gateway", "metadata", "metering", "wallets", "webhooks"]
