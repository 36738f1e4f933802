"""Lago's `subscription` object of a stored subscription, shared by the REST API and the
subscription webhooks. Formats, never computes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faregate.billing.lago_invoice import iso


def subscription_object(row: Mapping[str, Any]) -> dict[str, Any]:
    started_at = row.get("started_at")
    if started_at is None and row["status"] not in ("pending", "canceled"):
        started_at = row["subscription_at"]  # rows stored before started_at was kept
    return {
        "lago_id": row["id"],
        "external_id": row["external_id"],
        "lago_customer_id": row.get("customer_id"),
        "external_customer_id": row["external_customer_id"],
        "plan_code": row["plan_code"],
        "name": row.get("name"),
        "status": row["status"],
        "billing_time": row["billing_time"],
        "subscription_at": iso(row["subscription_at"]),
        # A pending or canceled subscription never started (Lago: null until it does).
        "started_at": iso(started_at),
        "ending_at": iso(row.get("ending_at")),
        "terminated_at": iso(row.get("terminated_at")),
        "canceled_at": iso(row.get("canceled_at")),
        "created_at": iso(row["created_at"]),
    }
