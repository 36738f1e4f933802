"""wallets remember when their credits were last consumed

Lago's wallet reports `last_consumed_credit_at`; faregate answered null always. The wallet
row now keeps it, moved with the consumed sum by every entry that consumes credits. Wallets
stored before take the time of their latest such entry.

Revision ID: 0016_wallet_last_consumed
Revises: 0014_subscription_id_reuse
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_wallet_last_consumed"
down_revision = "0014_subscription_id_reuse"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "wallets", sa.Column("last_consumed_credit_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(
        "UPDATE wallets SET last_consumed_credit_at = (SELECT max(e.created_at)"
        " FROM wallet_entries AS e WHERE e.wallet_id = wallets.id AND e.consumed_nanos > 0)"
    )


def downgrade() -> None:
    with op.batch_alter_table("wallets") as batch:
        batch.drop_column("last_consumed_credit_at")
