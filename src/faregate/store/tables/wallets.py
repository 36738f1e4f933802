"""Prepaid credit wallets: the wallet, its Lago-visible transactions (top-ups, voids, invoice
applications) and its double-entry ledger. Ledger rows are never updated or deleted."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    text,
)

from faregate.store.tables.base import ExactNumeric, Nanos, metadata

# The predicates of the ledger's partial indexes. A query uses such an index only when its
# WHERE implies the predicate: `kind = 'hold'` as a literal (a bound value does not), while
# `subscription_id = ?` implies `IS NOT NULL` on both databases.
HOLDS = text("kind = 'hold'")
OF_A_SUBSCRIPTION = text("subscription_id IS NOT NULL")
ACTIVE = text("status = 'active'")

wallets = Table(
    "wallets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("code", String(255)),
    Column("customer_id", String(36), nullable=False),
    Column("external_customer_id", String(255), nullable=False),
    Column("name", String(255)),
    Column("currency", String(3), nullable=False),
    # One credit is worth `rate_amount` units of the currency.
    Column("rate_amount", ExactNumeric(30, 15), nullable=False),
    Column("priority", Integer, nullable=False, default=50),
    Column("status", String(16), nullable=False, default="active"),  # active | terminated
    Column("expiration_at", DateTime(timezone=True)),
    Column("terminated_at", DateTime(timezone=True)),
    Column("recurring_transaction_rules", JSON, nullable=False, default=list),
    Column("metadata", JSON, nullable=False, default=dict),
    # Caches of the ledger, kept in the same transaction as the entries that change them:
    # credits in minus credits voided (every backend), and, for the PostgreSQL hold book,
    # consumed and held amounts (a conditional UPDATE on this row is its atomic hold).
    Column("funded_nanos", Nanos, nullable=False, default=0),
    Column("funded_version", BigInteger, nullable=False, default=0),
    Column("consumed_nanos", Nanos, nullable=False, default=0),
    Column("held_nanos", Nanos, nullable=False, default=0),
    # When credits were last consumed (Lago's `last_consumed_credit_at`): the latest entry
    # that moved an amount to `consumed`, kept with the sums it moved.
    Column("last_consumed_credit_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_wallets_customer", "external_customer_id"),
    # As in Lago, a code names one active wallet of a customer (a terminated one's may be
    # taken again).
    Index(
        "ux_wallets_customer_active_code",
        "customer_id",
        "code",
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    ),
    # One active automatic credit-limit wallet per customer, whichever replica creates it.
    Index(
        "ux_wallets_customer_credit_limit",
        "external_customer_id",
        "code",
        unique=True,
        sqlite_where=text("code = 'credit_limit' AND status = 'active'"),
        postgresql_where=text("code = 'credit_limit' AND status = 'active'"),
    ),
)

wallet_transactions = Table(
    "wallet_transactions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("wallet_id", String(36), nullable=False),
    Column("status", String(16), nullable=False),  # pending | settled | failed
    Column("transaction_status", String(16), nullable=False),  # purchased|granted|voided|invoiced
    Column("transaction_type", String(16), nullable=False),  # inbound | outbound
    Column("source", String(16), nullable=False),  # manual | interval | threshold
    Column("amount_nanos", Nanos, nullable=False),
    Column("name", String(255)),
    Column("metadata", JSON, nullable=False, default=list),
    Column("invoice_id", String(64)),
    # Makes a retried top-up (a rule firing twice for one crossing, a replayed request) a no-op.
    Column("idempotency_key", String(255), unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("settled_at", DateTime(timezone=True)),
    Index("ix_wallet_transactions_wallet", "wallet_id", "created_at"),
)

# One row is one balanced journal entry over the wallet's accounts: `available` (spendable
# credits), `held` (pending holds), `consumed` (usage) and `funding` (the outside world's
# side of top-ups and voids). The CHECK keeps every entry balanced; balances are sums.
wallet_entries = Table(
    "wallet_entries",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("wallet_id", String(36), nullable=False),
    # Idempotency: `hold:<id>` for a hold, `done:<id>` for its post OR release (so a hold is
    # finished exactly once), `tx:<id>` for a wallet transaction.
    Column("key", String(255), nullable=False, unique=True),
    # credit | void | refund | hold | post | release | debit
    Column("kind", String(16), nullable=False),
    Column("available_nanos", Nanos, nullable=False, default=0),
    Column("held_nanos", Nanos, nullable=False, default=0),
    Column("consumed_nanos", Nanos, nullable=False, default=0),
    Column("funding_nanos", Nanos, nullable=False, default=0),
    Column("hold_id", String(64)),
    Column("transaction_id", String(36)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # External id of the subscription whose plan priced a post or was refunded (None:
    # catalog-priced): finalized invoices apply only their own subscription's credits.
    Column("subscription_id", String(255)),
    # A post or release stored with its hold folded in (both in one batch of the ledger
    # writer, wallets/ledger.py `fold_finished`): what the hold had reserved.
    Column("reserved_nanos", Nanos),
    CheckConstraint(
        "available_nanos + held_nanos + consumed_nanos + funding_nanos = 0", name="balanced"
    ),
    Index("ix_wallet_entries_wallet", "wallet_id", "id"),
    # Only the rows each reader looks for: the sweep's holds by time, the plan-priced posts
    # and refunds of a subscription by time. Most rows are neither (a request's post is not
    # a hold, and is plan-priced only when a plan priced it), and every index a row skips
    # is one B-tree insert less in the ledger writer's batch.
    Index(
        "ix_wallet_entries_holds",
        "created_at",
        sqlite_where=HOLDS,
        postgresql_where=HOLDS,
    ),
    Index(
        "ix_wallet_entries_subscription",
        "subscription_id",
        "created_at",
        sqlite_where=OF_A_SUBSCRIPTION,
        postgresql_where=OF_A_SUBSCRIPTION,
    ),
)
