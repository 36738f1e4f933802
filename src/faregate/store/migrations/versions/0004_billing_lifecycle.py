"""billing lifecycle: soft-deleted metrics and plans, terminated subscriptions

Revision ID: 0004_billing_lifecycle
Revises: 0003_invoices
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_billing_lifecycle"
down_revision = "0003_invoices"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billable_metrics") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("terminated_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("terminated_at")
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("deleted_at")
    with op.batch_alter_table("billable_metrics") as batch:
        batch.drop_column("deleted_at")
