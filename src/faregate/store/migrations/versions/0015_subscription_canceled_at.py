"""a canceled subscription keeps when it was canceled

Lago's subscription reports `canceled_at`, set when a pending subscription is canceled
(terminated before it started); faregate stored no such time and answered none. Subscriptions
canceled before keep a null `canceled_at`: when they were canceled is not known.

Revision ID: 0015_subscription_canceled_at
Revises: 0017_wallet_code_per_customer

(Numbered before 0016 and 0017, which were committed first: it goes on top of them, so the
migrations keep one head.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_subscription_canceled_at"
down_revision = "0017_wallet_code_per_customer"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscriptions", sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("canceled_at")
