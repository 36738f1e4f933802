"""a billable metric's rounding_precision is within what faregate can apply

A metric could be stored with any `rounding_precision` (100000, 10^9, -25): current usage of
its subscriptions was then a 500 (or rounded every count to 0 or past the usage bound), and
every billing run failed for them. Such a metric is now refused
(`billing.metrics.MAX_ROUNDING_PRECISION`, 24 either way), and a stored one would fail to
load: its precision is brought to the nearest bound. Above 24 that changes only counts with
digits past the 24th decimal (and such a metric could not be billed at all with 100000); below
-24 every count was 0 or at least 10^25 anyway.

Revision ID: 0011_metric_rounding_bounds
Revises: 0010_metric_aggregation_type
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_metric_rounding_bounds"
down_revision = "0010_metric_aggregation_type"
branch_labels = None
depends_on = None

# billing.metrics.MAX_ROUNDING_PRECISION when this was written (a migration keeps its value).
_BOUND = 24

_metrics = sa.table(
    "billable_metrics", sa.column("id", sa.String), sa.column("definition", sa.JSON)
)


def upgrade() -> None:
    bind = op.get_bind()
    for metric_id, definition in bind.execute(sa.select(_metrics)).all():
        precision = (definition or {}).get("rounding_precision")
        if isinstance(precision, int) and not -_BOUND <= precision <= _BOUND:
            bounded = {**definition, "rounding_precision": max(-_BOUND, min(_BOUND, precision))}
            bind.execute(
                _metrics.update().where(_metrics.c.id == metric_id).values(definition=bounded)
            )


def downgrade() -> None:
    pass  # the precisions brought within the bound could not be applied
