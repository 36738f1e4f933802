"""Webhook endpoints (Lago's `webhook_endpoints`) and the webhooks outbox, which is also the
delivery log: one row per (event, endpoint), written before delivery, updated per attempt."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from faregate.store.tables.base import metadata

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("webhook_url", String(2048), nullable=False),
    Column("name", String(255)),
    Column("signature_algo", String(16), nullable=False, default="hmac"),
    # Webhook types this endpoint receives; NULL means every type.
    Column("event_types", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # As in Lago, one endpoint per URL.
    Index("ux_webhook_endpoints_url", "webhook_url", unique=True),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(36), primary_key=True),
    # NULL for endpoints declared in the configuration file rather than through the API.
    Column("endpoint_id", String(36)),
    Column("webhook_url", String(2048), nullable=False),
    Column("webhook_type", String(128), nullable=False),
    Column("object_type", String(64), nullable=False),
    # The exact JSON body sent (the signature is computed over these bytes).
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),  # pending|succeeded|failed
    Column("attempts", Integer, nullable=False, default=0),
    # Epoch milliseconds: when the next attempt is due, and until when a replica owns it.
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("claimed_until", BigInteger),
    Column("last_http_status", Integer),
    Column("last_error", String(512)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_webhooks_due", "status", "next_attempt_at"),
    Index("ix_webhooks_created", "created_at"),
)
