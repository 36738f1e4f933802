"""a billable metric's aggregation_type column agrees with its definition

`PUT /api/v1/billable_metrics/{code}` stored the new aggregation type in the metric's
definition (which billing reads) but left the `aggregation_type` column as created. The column
of every metric is set again from its definition.

Revision ID: 0010_metric_aggregation_type
Revises: 0009_exact_event_amounts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_metric_aggregation_type"
down_revision = "0009_exact_event_amounts"
branch_labels = None
depends_on = None

_metrics = sa.table(
    "billable_metrics",
    sa.column("id", sa.String),
    sa.column("aggregation_type", sa.String),
    sa.column("definition", sa.JSON),
)


def upgrade() -> None:
    bind = op.get_bind()
    for metric_id, stored, definition in bind.execute(sa.select(_metrics)).all():
        kind = (definition or {}).get("aggregation_type")
        if kind and kind != stored:
            bind.execute(
                _metrics.update().where(_metrics.c.id == metric_id).values(aggregation_type=kind)
            )


def downgrade() -> None:
    pass  # the column's old value was wrong; nothing to restore
