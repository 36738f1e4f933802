"""Billing catalog tables: billable metrics, plans (charges and filters as JSON) and
subscriptions. Definitions are stored as validated Lago JSON; no billing logic lives here."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Index, String, Table

from faregate.store.tables.base import metadata

billable_metrics = Table(
    "billable_metrics",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("code", String(255), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("aggregation_type", String(32), nullable=False),
    # The metric as Lago JSON (field_name, filters, rounding, ...), validated by BillableMetric.
    Column("definition", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

plans = Table(
    "plans",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("code", String(255), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    # The plan as Lago JSON, charges and charge filters included, validated by Plan.
    Column("definition", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("external_id", String(255), nullable=False, unique=True),
    Column("external_customer_id", String(255), nullable=False),
    Column("customer_id", String(36)),
    Column("plan_code", String(255), nullable=False),
    Column("name", String(255)),
    Column("status", String(16), nullable=False, default="active"),
    Column("billing_time", String(16), nullable=False, default="calendar"),
    Column("subscription_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("ending_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_subscriptions_customer", "external_customer_id"),
)
