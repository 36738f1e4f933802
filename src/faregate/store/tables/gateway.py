"""Tenancy tables: customers, teams, API keys, and provider credentials stored encrypted."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, ForeignKey, String, Table, Text

from faregate.store.tables.base import Nanos, metadata

customers = Table(
    "customers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("external_id", String(255), nullable=False, unique=True),
    Column("name", String(255)),
    Column("email", String(255)),
    # None until set, or until its first subscription gives it its plan's (Lago's rule).
    Column("currency", String(3), default="USD"),
    Column("timezone", String(64), nullable=False, default="UTC"),
    # Pay-in-arrears customers may carry a credit limit: unpaid usage is held against it.
    Column("credit_limit_nanos", Nanos),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True)),
)

teams = Table(
    "teams",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("customer_id", String(36), ForeignKey("customers.id")),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("prefix", String(16), nullable=False, unique=True),
    # sha256 of the whole key; the key itself is shown once and never stored.
    Column("key_hash", String(64), nullable=False),
    Column("name", String(255)),
    Column("customer_id", String(36), ForeignKey("customers.id")),
    Column("team_id", String(36), ForeignKey("teams.id")),
    Column("external_subscription_id", String(255)),
    Column("allowed_models", JSON),
    Column("tags", JSON, nullable=False, default=list),
    # Per-key policy: rpm / tpm / max_concurrency, max_price, cache opt-ins, moderation policy.
    Column("settings", JSON, nullable=False, default=dict),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

provider_credentials = Table(
    "provider_credentials",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("ciphertext", Text, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
