"""one webhook endpoint per URL

As in Lago (`index_webhook_endpoints_on_webhook_url_and_organization_id`), a second endpoint
with a URL already registered is refused; faregate accepted it, and each webhook then went to
that URL once per endpoint. Endpoints already sharing a URL become its oldest one, which
receives what any of them did (every type if one took every type, else all of their types),
and deliveries queued for the others go to it.

Revision ID: 0019_webhook_endpoint_url_unique
Revises: 0018_request_events, 0015_subscription_canceled_at, 0003_webhooks
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0019_webhook_endpoint_url_unique"
# Joins 0015 and 0018 (each written on top of 0017), and comes after the webhook tables
# (0003_webhooks, on a branch of its own) too.
down_revision = ("0018_request_events", "0015_subscription_canceled_at", "0003_webhooks")
branch_labels = None
depends_on = None


def _types(value: Any) -> list[str] | None:
    """Stored JSON (text on SQLite, already parsed on PostgreSQL); None or empty: every type."""
    if isinstance(value, str):
        value = json.loads(value)
    return list(value) if value else None


def _merge(conn: Any, url: str) -> None:
    rows = conn.execute(
        sa.text(
            "SELECT id, event_types FROM webhook_endpoints WHERE webhook_url = :url"
            " ORDER BY created_at, id"
        ),
        {"url": url},
    ).all()
    keep, others = rows[0][0], [r[0] for r in rows[1:]]
    every = [_types(r[1]) for r in rows]
    merged = None if any(t is None for t in every) else sorted({t for ts in every for t in ts})
    endpoints = sa.table(
        "webhook_endpoints", sa.column("id", sa.String), sa.column("event_types", sa.JSON)
    )
    conn.execute(sa.update(endpoints).where(endpoints.c.id == keep).values(event_types=merged))
    for other in others:
        conn.execute(
            sa.text("UPDATE webhooks SET endpoint_id = :keep WHERE endpoint_id = :other"),
            {"keep": keep, "other": other},
        )
        conn.execute(sa.text("DELETE FROM webhook_endpoints WHERE id = :id"), {"id": other})


def upgrade() -> None:
    conn = op.get_bind()
    shared = conn.execute(
        sa.text(
            "SELECT webhook_url FROM webhook_endpoints GROUP BY webhook_url HAVING count(*) > 1"
        )
    ).scalars()
    for url in list(shared):
        _merge(conn, url)
    op.create_index("ux_webhook_endpoints_url", "webhook_endpoints", ["webhook_url"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_webhook_endpoints_url", table_name="webhook_endpoints")
