"""future subscriptions are pending; terminating one cancels it

As in Lago, a subscription whose `subscription_at` is in the future is `pending` until it
starts, and terminating a pending one cancels it (never billed). Before, such a subscription
was stored `active`, and terminating it stored `terminated` with an `ending_at` before its
start, which every billing run then failed on (`ending_at: invalid_date`). Those rows are
brought to what they would be now. Data only: the tables do not change.

Revision ID: 0013_pending_subscriptions
Revises: 0012_customer_currency_optional, 0004_billing_lifecycle
"""

from __future__ import annotations

from alembic import op

revision = "0013_pending_subscriptions"
# After the subscriptions' terminated_at (0004, on a branch of its own) too.
down_revision = ("0012_customer_currency_optional", "0004_billing_lifecycle")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE subscriptions SET status = 'canceled', terminated_at = NULL, ending_at = NULL"
        " WHERE status = 'terminated' AND ending_at IS NOT NULL"
        " AND ending_at <= COALESCE(started_at, subscription_at)"
    )
    op.execute(
        "UPDATE subscriptions SET status = 'pending'"
        " WHERE status = 'active' AND started_at IS NULL AND subscription_at > CURRENT_TIMESTAMP"
    )


def downgrade() -> None:
    pass  # pending and canceled were valid statuses before; nothing to undo
