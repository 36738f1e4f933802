"""a wallet's code names one active wallet of its customer

As in Lago (`index_uniq_wallet_code_per_customer`), two active wallets of one customer may
not share a code; a terminated wallet's code may be taken again. faregate accepted any
number. Active wallets that already share a code keep it on the oldest; each later one's
code gets `-` and the start of the wallet's id appended (`prepaid-3f2a9c1d`), so the index
can be built and every wallet can still be named.

Revision ID: 0017_wallet_code_per_customer
Revises: 0016_wallet_last_consumed
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_wallet_code_per_customer"
down_revision = "0016_wallet_last_consumed"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    op.execute(
        "UPDATE wallets SET code = substr(code, 1, 246) || '-' || substr(id, 1, 8)"
        " WHERE status = 'active' AND code IS NOT NULL AND EXISTS (SELECT 1 FROM wallets AS w"
        " WHERE w.customer_id = wallets.customer_id AND w.code = wallets.code"
        " AND w.status = 'active' AND (w.created_at < wallets.created_at"
        " OR (w.created_at = wallets.created_at AND w.id < wallets.id)))"
    )
    op.create_index(
        "ux_wallets_customer_active_code",
        "wallets",
        ["customer_id", "code"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("ux_wallets_customer_active_code", table_name="wallets")
