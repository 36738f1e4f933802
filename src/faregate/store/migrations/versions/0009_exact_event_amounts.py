"""an event's precise_total_amount_cents is stored exactly on SQLite

SQLite keeps any number given to a NUMERIC column as an integer or a float, so an amount of
more than 15 significant digits (`12345678901234567890.123456789012345`) came back as
`12345678901234567168`. On SQLite the amount is now the decimal's text
(`store.tables.base.ExactNumeric`), as a wallet's rate is since 0008; PostgreSQL's NUMERIC
was exact already and is left as it is. An amount stored before becomes the text of the
float SQLite made of it (15 significant digits: the sent text itself when it had no more).

Revision ID: 0009_exact_event_amounts
Revises: 0008_exact_wallet_rates
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_exact_event_amounts"
down_revision = "0008_exact_wallet_rates"
branch_labels = None
depends_on = None


def _retype(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("events") as batch:
        batch.alter_column(
            "precise_total_amount_cents", existing_type=old, type_=new, existing_nullable=True
        )


def upgrade() -> None:
    _retype(sa.Numeric(40, 15), sa.String(42))


def downgrade() -> None:
    _retype(sa.String(42), sa.Numeric(40, 15))
