"""invoices of a terminated subscription's last period say subscription_terminating

Before `subscription_terminating` existed, the invoice of a terminated subscription's last
period was stored as `subscription_periodic`. It is recognised by the rule the billing run
itself uses (`billing.invoicing._closing_reason`): a `subscription_periodic` invoice of a
terminated subscription whose period ends at (or after) the subscription's `ending_at`; only
the last period of a subscription ends there. Such invoices, drafts and finalized ones, now
say `subscription_terminating` (Lago's `invoicing_reason`; amounts, numbers and files are
unchanged: the reason is only in `billing_periods[]`). A subscription that already has a
`subscription_terminating` invoice keeps its other invoices as they are. The period end is
read from the invoice's document (ISO with its offset), and `ending_at` as the application
reads it (naive is UTC), as the billing run compared them.

Downgrade changes nothing back: the schema is the same, and which invoices this changed and
which the billing run made `subscription_terminating` cannot be told apart.

Revision ID: 0020_terminating_invoice_reason
Revises: 0019_webhook_endpoint_url_unique
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0020_terminating_invoice_reason"
down_revision = "0019_webhook_endpoint_url_unique"
branch_labels = None
depends_on = None

PERIODIC = "subscription_periodic"
TERMINATING = "subscription_terminating"


def _utc(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite without type processing
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value


def _period_end(document: Any) -> datetime | None:
    if isinstance(document, str):
        document = json.loads(document)
    found = document.get("to_datetime") if isinstance(document, dict) else None
    return _utc(found) if isinstance(found, str) else None


def upgrade() -> None:
    conn = op.get_bind()
    candidates = conn.execute(
        sa.text(
            "SELECT i.id, i.subscription_id, i.document, s.ending_at"
            " FROM invoices i JOIN subscriptions s ON s.id = i.subscription_id"
            " WHERE i.billing_reason = :periodic AND s.status = 'terminated'"
            " AND s.ending_at IS NOT NULL"
        ),
        {"periodic": PERIODIC},
    ).all()
    if not candidates:
        return
    ended = {
        r[0]
        for r in conn.execute(
            sa.text("SELECT DISTINCT subscription_id FROM invoices WHERE billing_reason = :t"),
            {"t": TERMINATING},
        )
    }
    for invoice_id, subscription_id, document, ending_at in candidates:
        end = _period_end(document)
        if subscription_id in ended or end is None or end < _utc(ending_at):
            continue
        conn.execute(
            sa.text("UPDATE invoices SET billing_reason = :t WHERE id = :id"),
            {"t": TERMINATING, "id": invoice_id},
        )
        ended.add(subscription_id)


def downgrade() -> None:
    pass
