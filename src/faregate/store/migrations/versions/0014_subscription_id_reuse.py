"""a terminated subscription's external_id may be taken again

As in Lago, `external_id` is unique only among live (pending or active) subscriptions: once
one is terminated or canceled, `POST /subscriptions` with its external_id creates a new
subscription (it used to answer the terminated row). The unique constraint on the column
becomes a partial unique index, and lookups by external_id get an index of their own.

Revision ID: 0014_subscription_id_reuse
Revises: 0013_pending_subscriptions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_subscription_id_reuse"
down_revision = "0013_pending_subscriptions"
branch_labels = None
depends_on = None

_LIVE = sa.text("status IN ('pending', 'active')")


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_constraint("uq_subscriptions_external_id", type_="unique")
    op.create_index("ix_subscriptions_external_id", "subscriptions", ["external_id", "created_at"])
    op.create_index(
        "ux_subscriptions_live_external_id",
        "subscriptions",
        ["external_id"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )


def downgrade() -> None:
    # Fails while an external_id is held by several subscriptions (the old schema cannot
    # hold them): such rows must be removed or renamed first.
    op.drop_index("ux_subscriptions_live_external_id", table_name="subscriptions")
    op.drop_index("ix_subscriptions_external_id", table_name="subscriptions")
    with op.batch_alter_table("subscriptions") as batch:
        batch.create_unique_constraint("uq_subscriptions_external_id", ["external_id"])
