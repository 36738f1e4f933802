"""Signed webhooks in Lago's format, delivered from a durable outbox with retries."""

from faregate.webhooks.dispatcher import Endpoint, Webhooks, WebhookSettings
from faregate.webhooks.signing import envelope, headers, signature, verify

__all__ = ["Endpoint", "WebhookSettings", "Webhooks", "envelope", "headers", "signature", "verify"]
