"""a customer may have no currency yet

As in Lago, a customer created through the billing API without a `currency` has none until
its first subscription gives it its plan's; it used to be stored as USD, so such a customer
could not subscribe to a plan in another currency once faregate refused mismatched ones.
Customers stored before keep their currency.

Revision ID: 0012_customer_currency_optional
Revises: 0011_metric_rounding_bounds
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_customer_currency_optional"
down_revision = "0011_metric_rounding_bounds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.alter_column("currency", existing_type=sa.String(3), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE customers SET currency = 'USD' WHERE currency IS NULL")
    with op.batch_alter_table("customers") as batch:
        batch.alter_column("currency", existing_type=sa.String(3), nullable=False)
