"""invoices

Revision ID: 0003_invoices
Revises: 0002
Create Date: 2026-11-22 08:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_invoices"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("sequential_id", sa.Integer(), nullable=True),
        sa.Column("number", sa.String(length=64), nullable=True),
        sa.Column("external_customer_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=True),
        sa.Column("external_subscription_id", sa.String(length=255), nullable=False),
        sa.Column("subscription_id", sa.String(length=36), nullable=False),
        sa.Column("plan_code", sa.String(length=255), nullable=False),
        sa.Column("invoice_type", sa.String(length=32), nullable=False),
        sa.Column("billing_reason", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("issuing_date", sa.Date(), nullable=False),
        sa.Column("from_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.Column("to_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fees_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("taxes_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("prepaid_credit_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("total_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("sequential_id", name=op.f("uq_invoices_sequential_id")),
        sa.UniqueConstraint(
            "subscription_id", "billing_reason", "from_datetime", name="uq_invoices_period"
        ),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invoices_customer", ["external_customer_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_invoices_status", ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoices_status")
        batch_op.drop_index("ix_invoices_customer")
    op.drop_table("invoices")
