"""Billing tables: billable metrics, plans (charges and filters as JSON), subscriptions and
invoices. Definitions are stored as validated Lago JSON; no billing logic lives here."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    text,
)

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
    # Soft delete (Lago's discard): a deleted metric keeps its code and its stored events.
    Column("deleted_at", DateTime(timezone=True)),
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
    # Soft delete: the terminated subscriptions of a deleted plan are still invoiced by it.
    Column("deleted_at", DateTime(timezone=True)),
)

# The subscriptions that hold their external_id (Lago: `active` and `pending`).
LIVE_SUBSCRIPTION = text("status IN ('pending', 'active')")

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    # Unique among live (pending or active) subscriptions only: a terminated or canceled
    # subscription's external_id may be taken again by a new one, as in Lago.
    Column("external_id", String(255), nullable=False),
    Column("external_customer_id", String(255), nullable=False),
    Column("customer_id", String(36)),
    Column("plan_code", String(255), nullable=False),
    Column("name", String(255)),
    Column("status", String(16), nullable=False, default="active"),
    Column("billing_time", String(16), nullable=False, default="calendar"),
    Column("subscription_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("ending_at", DateTime(timezone=True)),
    Column("terminated_at", DateTime(timezone=True)),
    # When a pending subscription was canceled (terminated before it started).
    Column("canceled_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_subscriptions_customer", "external_customer_id"),
    Index("ix_subscriptions_external_id", "external_id", "created_at"),
    Index(
        "ux_subscriptions_live_external_id",
        "external_id",
        unique=True,
        sqlite_where=LIVE_SUBSCRIPTION,
        postgresql_where=LIVE_SUBSCRIPTION,
    ),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", String(36), primary_key=True),  # Lago's lago_id
    # Numbered on finalization, gapless among finalized invoices; drafts have none.
    Column("sequential_id", Integer, unique=True),
    Column("number", String(64)),
    Column("external_customer_id", String(255), nullable=False),
    Column("customer_id", String(36)),
    Column("external_subscription_id", String(255), nullable=False),
    Column("subscription_id", String(36), nullable=False),
    Column("plan_code", String(255), nullable=False),
    Column("invoice_type", String(32), nullable=False),
    # Lago's invoicing_reason: subscription_starting | subscription_periodic |
    # subscription_terminating
    Column("billing_reason", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # draft | finalized
    Column("currency", String(3), nullable=False),
    Column("issuing_date", Date, nullable=False),
    Column("from_datetime", DateTime(timezone=True), nullable=False),
    Column("to_datetime", DateTime(timezone=True), nullable=False),
    Column("fees_amount_cents", BigInteger, nullable=False),
    Column("taxes_amount_cents", BigInteger, nullable=False),
    Column("prepaid_credit_amount_cents", BigInteger, nullable=False),
    Column("total_amount_cents", BigInteger, nullable=False),
    # The whole computed invoice (fees with exact amounts, every total) as JSON.
    Column("document", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finalized_at", DateTime(timezone=True)),
    # One invoice per subscription, reason and period, even with several billing runners.
    UniqueConstraint(
        "subscription_id", "billing_reason", "from_datetime", name="uq_invoices_period"
    ),
    Index("ix_invoices_customer", "external_customer_id", "created_at"),
    Index("ix_invoices_status", "status"),
)
