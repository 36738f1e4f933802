"""Metering tables: one record per gateway request, Lago-style usage events, and the hourly
rollups of those events that current usage and invoices read instead of raw scans."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from faregate.store.tables.base import ExactNumeric, Nanos, metadata

requests = Table(
    "requests",
    metadata,
    Column("id", String(40), primary_key=True),  # the request id
    Column("created_at", DateTime(timezone=True), nullable=False),
    # chat | embeddings | images | moderations | transcriptions
    Column("kind", String(16), nullable=False),
    Column("customer_id", String(36)),
    Column("external_customer_id", String(255)),
    Column("external_subscription_id", String(255)),
    Column("team_id", String(36)),
    Column("key_id", String(36)),
    Column("tags", JSON, nullable=False, default=list),
    Column("model_requested", String(255)),
    Column("model_served", String(255)),
    Column("deployment", String(255)),
    Column("provider", String(64)),
    Column("status", Integer, nullable=False),
    Column("error_code", String(64)),
    Column("stream", Boolean, nullable=False, default=False),
    Column("cache_hit", Boolean, nullable=False, default=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("latency_ms", Numeric(12, 3)),
    Column("ttft_ms", Numeric(12, 3)),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cached_input_tokens", BigInteger, nullable=False, default=0),
    Column("reasoning_tokens", BigInteger, nullable=False, default=0),
    Column("images", Integer, nullable=False, default=0),
    Column("image_size", String(32)),
    Column("image_quality", String(32)),
    Column("image_steps", Integer),
    Column("seconds", Numeric(18, 6)),
    Column("usage_estimated", Boolean, nullable=False, default=False),
    Column("cost_nanos", Nanos, nullable=False, default=0),
    Column("price_nanos", Nanos, nullable=False, default=0),
    Column("saved_nanos", Nanos, nullable=False, default=0),
    Column("experiment", String(128)),
    Column("arm", String(255)),
    # The usage events the request made for its subscription's plan, packed, as JSON text
    # (encoded when the request is recorded, not when its batch is bound), where they are
    # not stored as rows of `events` (SQLite; see metering.derived). NULL otherwise.
    Column("events", Text),
    Index("ix_requests_customer_time", "customer_id", "created_at"),
    Index("ix_requests_created_at", "created_at"),
    # A/B reports: counts per arm, and latency quantiles by ORDER BY latency_ms OFFSET k.
    # Only requests of an experiment: the others would land at random places (by latency)
    # and dirty an index page each per batch.
    Index(
        "ix_requests_experiment_arm_latency",
        "experiment",
        "arm",
        "latency_ms",
        sqlite_where=text("experiment IS NOT NULL"),
        postgresql_where=text("experiment IS NOT NULL"),
    ),
    # A subscription's events over a period, where its requests carry them.
    Index(
        "ix_requests_subscription_events",
        "external_subscription_id",
        "created_at",
        sqlite_where=text("events IS NOT NULL"),
        postgresql_where=text("events IS NOT NULL"),
    ),
)

events = Table(
    "events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("transaction_id", String(255), nullable=False),
    Column("external_subscription_id", String(255), nullable=False),
    Column("external_customer_id", String(255)),
    Column("code", String(255), nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("properties", JSON, nullable=False, default=dict),
    Column("precise_total_amount_cents", ExactNumeric(40, 15)),
    Column("source", String(16), nullable=False, default="gateway"),  # gateway | api
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint(
        "external_subscription_id", "transaction_id", name="uq_events_subscription_tx"
    ),
    Index("ix_events_billing_lookup", "external_subscription_id", "code", "timestamp"),
)

# Exact decimals: PostgreSQL NUMERIC (unbounded); SQLite has no exact numeric type, so text.
ExactDecimal = Numeric().with_variant(String(80), "sqlite")

# One row per (subscription, metric code, filter dimensions, UTC hour), maintained by the usage
# writer in the transaction that inserts the events, from the events actually inserted.
# `dims` is the canonical JSON of the event's values for the metric's filter keys. Only the
# columns the metric's aggregation needs are filled (sum: value_sum; max: value_max; latest:
# latest_value/latest_at; weighted_sum: value_sum and value_time_sum = sum of value x seconds
# past the hour).
usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("external_subscription_id", String(255), nullable=False),
    Column("code", String(255), nullable=False),
    Column("dims", String(1024), nullable=False),
    Column("hour", DateTime(timezone=True), nullable=False),
    Column("events_count", BigInteger, nullable=False, default=0),
    Column("values_count", BigInteger, nullable=False, default=0),
    Column("value_sum", ExactDecimal),
    Column("value_max", ExactDecimal),
    Column("latest_value", ExactDecimal),
    Column("latest_at", DateTime(timezone=True)),
    Column("value_time_sum", ExactDecimal),
    PrimaryKeyConstraint("external_subscription_id", "code", "dims", "hour"),
)
