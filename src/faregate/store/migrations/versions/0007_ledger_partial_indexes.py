"""the ledger's time indexes cover only the rows their readers look for; a finish folded
with its hold keeps what the hold reserved

The sweep reads holds by time and finalized invoices read the plan-priced posts and refunds
of one subscription by time; every entry was indexed for both, so each request's two entries
cost two index inserts that no query ever used. A hold finished in the batch that stores it
is stored folded into its post or release, which keeps the hold's amount in `reserved_nanos`.

Revision ID: 0007_ledger_partial_indexes
Revises: 0005_wallet_scopes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_ledger_partial_indexes"
down_revision = "0005_wallet_scopes"
branch_labels = None
depends_on = None

_HOLDS = sa.text("kind = 'hold'")
_OF_A_SUBSCRIPTION = sa.text("subscription_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("wallet_entries") as batch:
        batch.add_column(sa.Column("reserved_nanos", sa.BigInteger(), nullable=True))
    op.drop_index("ix_wallet_entries_kind_time", table_name="wallet_entries")
    op.create_index(
        "ix_wallet_entries_holds",
        "wallet_entries",
        ["created_at"],
        sqlite_where=_HOLDS,
        postgresql_where=_HOLDS,
    )
    op.drop_index("ix_wallet_entries_subscription", table_name="wallet_entries")
    op.create_index(
        "ix_wallet_entries_subscription",
        "wallet_entries",
        ["subscription_id", "created_at"],
        sqlite_where=_OF_A_SUBSCRIPTION,
        postgresql_where=_OF_A_SUBSCRIPTION,
    )


def downgrade() -> None:
    op.drop_index("ix_wallet_entries_subscription", table_name="wallet_entries")
    op.create_index(
        "ix_wallet_entries_subscription", "wallet_entries", ["subscription_id", "created_at"]
    )
    op.drop_index("ix_wallet_entries_holds", table_name="wallet_entries")
    op.create_index("ix_wallet_entries_kind_time", "wallet_entries", ["kind", "created_at"])
    with op.batch_alter_table("wallet_entries") as batch:
        batch.drop_column("reserved_nanos")
