"""wallet scopes: the subscription that priced each ledger post, one automatic credit-limit
wallet per customer

Revision ID: 0005_wallet_scopes
Revises: 0003_wallets
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_wallet_scopes"
down_revision = "0003_wallets"
branch_labels = None
depends_on = None

_ACTIVE_CREDIT_LIMIT = sa.text("code = 'credit_limit' AND status = 'active'")


def upgrade() -> None:
    with op.batch_alter_table("wallet_entries") as batch:
        batch.add_column(sa.Column("subscription_id", sa.String(length=255), nullable=True))
    op.create_index(
        "ix_wallet_entries_subscription",
        "wallet_entries",
        ["subscription_id", "created_at"],
    )
    op.create_index(
        "ux_wallets_customer_credit_limit",
        "wallets",
        ["external_customer_id", "code"],
        unique=True,
        sqlite_where=_ACTIVE_CREDIT_LIMIT,
        postgresql_where=_ACTIVE_CREDIT_LIMIT,
    )


def downgrade() -> None:
    op.drop_index("ux_wallets_customer_credit_limit", table_name="wallets")
    op.drop_index("ix_wallet_entries_subscription", table_name="wallet_entries")
    with op.batch_alter_table("wallet_entries") as batch:
        batch.drop_column("subscription_id")
