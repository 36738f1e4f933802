"""a request's usage events may ride on its record

On SQLite a gateway request's events are no longer stored as rows of `events`: its record
carries them, packed, in `requests.events` (metering.derived), and a partial index finds a
subscription's over a period. Events stored as rows before stay where they are and are read
as before.

Revision ID: 0018_request_events
Revises: 0017_wallet_code_per_customer
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_request_events"
down_revision = "0017_wallet_code_per_customer"
branch_labels = None
depends_on = None

_CARRYING = sa.text("events IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("events", sa.Text(), nullable=True))
    op.create_index(
        "ix_requests_subscription_events",
        "requests",
        ["external_subscription_id", "created_at"],
        sqlite_where=_CARRYING,
        postgresql_where=_CARRYING,
    )


def downgrade() -> None:
    op.drop_index("ix_requests_subscription_events", table_name="requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("events")
