"""a wallet's rate is stored exactly on SQLite

SQLite keeps any number given to a NUMERIC column as an integer or a float, so a rate of
more than 15 significant digits (`12.000000000000001`) came back changed. On SQLite the rate
is now the decimal's text (`store.tables.base.ExactNumeric`); PostgreSQL's NUMERIC was
exact already and is left as it is. Rates stored before keep the value SQLite made of them.

Revision ID: 0008_exact_wallet_rates
Revises: 0007_ledger_partial_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_exact_wallet_rates"
down_revision = "0007_ledger_partial_indexes"
branch_labels = None
depends_on = None

_ACTIVE_CREDIT_LIMIT = sa.text("code = 'credit_limit' AND status = 'active'")


def _retype(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # The table is rebuilt: its partial index is made again by hand, with its condition.
    op.drop_index("ux_wallets_customer_credit_limit", table_name="wallets")
    with op.batch_alter_table("wallets") as batch:
        batch.alter_column("rate_amount", existing_type=old, type_=new, existing_nullable=False)
    op.create_index(
        "ux_wallets_customer_credit_limit",
        "wallets",
        ["external_customer_id", "code"],
        unique=True,
        sqlite_where=_ACTIVE_CREDIT_LIMIT,
    )


def upgrade() -> None:
    _retype(sa.Numeric(30, 15), sa.String(32))


def downgrade() -> None:
    _retype(sa.String(32), sa.Numeric(30, 15))
