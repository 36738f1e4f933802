"""All queries on invoices (SQLAlchemy Core). Callers own the transaction boundaries; the
invoicing service decides what to write. A finalized row is never updated here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.billing.invoice_document import invoice_document
from faregate.billing.invoices import Invoice
from faregate.store.tables.billing import invoices


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value


def _row(mapping: Any) -> dict[str, Any]:
    return {k: _utc(v) for k, v in dict(mapping).items()}


def _columns(invoice: Invoice) -> dict[str, Any]:
    return {
        "status": invoice.status,
        "currency": invoice.currency,
        "issuing_date": invoice.issuing_date,
        "from_datetime": invoice.from_datetime,
        "to_datetime": invoice.to_datetime,
        "fees_amount_cents": invoice.fees_amount_cents,
        "taxes_amount_cents": invoice.taxes_amount_cents,
        "prepaid_credit_amount_cents": invoice.prepaid_credit_amount_cents,
        "total_amount_cents": invoice.total_amount_cents,
        "document": invoice_document(invoice),
    }


async def insert_invoice(
    conn: AsyncConnection, invoice: Invoice, *, ids: dict[str, Any], billing_reason: str
) -> dict[str, Any]:
    """Insert a draft. When this subscription, reason and period is invoiced already (another
    billing run got there first) the unique key raises IntegrityError: the caller rolls back.
    `ids` holds customer_id and subscription_id."""
    now = datetime.now(UTC)
    row = {
        "id": str(uuid.uuid4()),
        "external_customer_id": invoice.external_customer_id,
        "external_subscription_id": invoice.external_subscription_id,
        "plan_code": invoice.plan_code,
        "invoice_type": invoice.invoice_type,
        "billing_reason": billing_reason,
        "created_at": now,
        "updated_at": now,
        **ids,
        **_columns(invoice),
    }
    await conn.execute(invoices.insert().values(**row))
    return row


async def invoice_by_id(conn: AsyncConnection, invoice_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(invoices).where(invoices.c.id == invoice_id))).mappings()
    found = row.first()
    return _row(found) if found else None


async def list_invoices(
    conn: AsyncConnection,
    *,
    external_customer_id: str | None = None,
    external_subscription_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """A page of invoices, newest first, and the total count matching the filters."""
    where = []
    if external_customer_id:
        where.append(invoices.c.external_customer_id == external_customer_id)
    if external_subscription_id:
        where.append(invoices.c.external_subscription_id == external_subscription_id)
    if status:
        where.append(invoices.c.status == status)
    query = (
        select(invoices)
        .where(*where)
        .order_by(invoices.c.from_datetime.desc(), invoices.c.created_at.desc(), invoices.c.id)
        .limit(limit)
        .offset(offset)
    )
    total = (await conn.execute(select(func.count()).select_from(invoices).where(*where))).scalar()
    return [_row(r) for r in (await conn.execute(query)).mappings()], int(total or 0)


async def invoiced_periods(
    conn: AsyncConnection, subscription_id: str
) -> set[tuple[str, datetime]]:
    """(billing_reason, from_datetime) of the subscription's invoices."""
    query = select(invoices.c.billing_reason, invoices.c.from_datetime).where(
        invoices.c.subscription_id == subscription_id
    )
    return {(r.billing_reason, _utc(r.from_datetime)) for r in await conn.execute(query)}


async def drafts(conn: AsyncConnection) -> list[dict[str, Any]]:
    query = select(invoices).where(invoices.c.status == "draft").order_by(invoices.c.created_at)
    return [_row(r) for r in (await conn.execute(query)).mappings()]


async def update_draft(conn: AsyncConnection, invoice_id: str, invoice: Invoice) -> bool:
    """Replace a draft's computation; False when it is no longer a draft."""
    result = await conn.execute(
        update(invoices)
        .where(invoices.c.id == invoice_id, invoices.c.status == "draft")
        .values(updated_at=datetime.now(UTC), **_columns(invoice))
    )
    return bool(result.rowcount)


async def finalize(
    conn: AsyncConnection, invoice_id: str, invoice: Invoice, *, number_prefix: str
) -> bool:
    """Mark a draft finalized with the next sequential number; False when it was not a draft.
    Numbers are gapless; a concurrent finalization taking the same number raises
    IntegrityError, and the caller retries in a new transaction."""
    top = (await conn.execute(select(func.max(invoices.c.sequential_id)))).scalar()
    sequential = int(top or 0) + 1
    result = await conn.execute(
        update(invoices)
        .where(invoices.c.id == invoice_id, invoices.c.status == "draft")
        .values(
            sequential_id=sequential,
            number=f"{number_prefix}-{sequential:06d}",
            finalized_at=invoice.finalized_at,
            updated_at=datetime.now(UTC),
            **_columns(invoice),
        )
    )
    return bool(result.rowcount)
