"""index for A/B experiment reports on request records

Revision ID: 0003_routing
Revises: 0002
Create Date: 2026-11-22 08:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0003_routing"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_requests_experiment_arm_latency",
        "requests",
        ["experiment", "arm", "latency_ms"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_requests_experiment_arm_latency", table_name="requests")
