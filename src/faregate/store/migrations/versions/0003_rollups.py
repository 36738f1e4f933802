"""hourly usage rollups

Revision ID: 0003_rollups
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_rollups"
down_revision = "0002"
branch_labels = None
depends_on = None

EXACT = sa.Numeric().with_variant(sa.String(length=80), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage_rollups",
        sa.Column("external_subscription_id", sa.String(length=255), nullable=False),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("dims", sa.String(length=1024), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events_count", sa.BigInteger(), nullable=False),
        sa.Column("values_count", sa.BigInteger(), nullable=False),
        sa.Column("value_sum", EXACT, nullable=True),
        sa.Column("value_max", EXACT, nullable=True),
        sa.Column("latest_value", EXACT, nullable=True),
        sa.Column("latest_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("value_time_sum", EXACT, nullable=True),
        sa.PrimaryKeyConstraint(
            "external_subscription_id", "code", "dims", "hour", name=op.f("pk_usage_rollups")
        ),
    )


def downgrade() -> None:
    op.drop_table("usage_rollups")
