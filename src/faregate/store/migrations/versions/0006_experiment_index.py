"""the A/B report index covers only requests of an experiment

Requests outside any experiment (nearly all of them) were indexed by their latency too, at a
random place in the index: a batch of inserts dirtied one index page per request.

Revision ID: 0006_experiment_index
Revises: 0003_routing
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_experiment_index"
down_revision = "0003_routing"
branch_labels = None
depends_on = None

_NAME = "ix_requests_experiment_arm_latency"
_IN_EXPERIMENT = sa.text("experiment IS NOT NULL")


def upgrade() -> None:
    op.drop_index(_NAME, table_name="requests")
    op.create_index(
        _NAME,
        "requests",
        ["experiment", "arm", "latency_ms"],
        sqlite_where=_IN_EXPERIMENT,
        postgresql_where=_IN_EXPERIMENT,
    )


def downgrade() -> None:
    op.drop_index(_NAME, table_name="requests")
    op.create_index(_NAME, "requests", ["experiment", "arm", "latency_ms"])
