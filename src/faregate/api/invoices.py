"""Lago v1 invoices API (list, find, refresh, finalize, download) plus the rendered documents
behind `file_url` and an on-demand billing run. HTTP only: the invoicing service decides."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from aiohttp import web

from faregate.api.billing import lago_endpoint, lago_error, page_of
from faregate.api.common import bearer_key, json_response
from faregate.api.state import SERVICES, Services
from faregate.auth import repository as customers_repo
from faregate.billing import invoice_repository as irepo
from faregate.billing.errors import BillingNotFound, BillingValidationError
from faregate.billing.invoicing import Invoicing
from faregate.billing.lago_invoice import invoice_number, stored_invoice
from faregate.billing.render import render_html, render_pdf

STATUSES = ("draft", "finalized")


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _invoicing(request: web.Request) -> Invoicing:
    invoicing: Invoicing = _services(request).invoicing
    return invoicing


def _signature(services: Services, invoice_id: str) -> str:
    """A capability for one invoice's documents, so `file_url` opens without the API key."""
    secret = (services.settings.secret_key or services.settings.admin_key or "").encode()
    return hmac.new(secret, f"invoice-file:{invoice_id}".encode(), hashlib.sha256).hexdigest()


def file_url(services: Services, base: str, invoice_id: str, kind: str = "pdf") -> str:
    return f"{base}/api/v1/invoices/{invoice_id}/file.{kind}?signature={_signature(services, invoice_id)}"


def _base(request: web.Request) -> str:
    configured = _invoicing(request).settings.public_url
    return configured or str(request.url.origin())


async def _invoice_response(request: web.Request, row: dict[str, Any]) -> web.Response:
    url = file_url(_services(request), _base(request), row["id"])
    body = await _invoicing(request).invoice_json(row, url)
    return json_response({"invoice": body})


@lago_endpoint
async def list_invoices(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise BillingValidationError("status", "value_is_invalid")
    page, per_page = page_of(request)
    async with _services(request).engine.connect() as conn:
        rows, total = await irepo.list_invoices(
            conn,
            external_customer_id=request.query.get("external_customer_id"),
            external_subscription_id=request.query.get("external_subscription_id"),
            status=status,
            limit=per_page,
            offset=(page - 1) * per_page,
        )
    invoicing, base = _invoicing(request), _base(request)
    services = _services(request)
    items = [await invoicing.invoice_json(r, file_url(services, base, r["id"])) for r in rows]
    pages = max(1, -(-total // per_page))
    meta = {
        "current_page": page,
        "next_page": page + 1 if page < pages else None,
        "prev_page": page - 1 if page > 1 else None,
        "total_pages": pages,
        "total_count": total,
    }
    return json_response({"invoices": items, "meta": meta})


async def _stored(request: web.Request) -> dict[str, Any]:
    invoice_id = request.match_info["lago_id"]
    async with _services(request).engine.connect() as conn:
        row = await irepo.invoice_by_id(conn, invoice_id)
    if row is None:
        raise BillingNotFound("invoice", invoice_id)
    return row


@lago_endpoint
async def get_invoice(request: web.Request) -> web.Response:
    return await _invoice_response(request, await _stored(request))


@lago_endpoint
async def refresh_invoice(request: web.Request) -> web.Response:
    row = await _invoicing(request).refresh(request.match_info["lago_id"])
    return await _invoice_response(request, row)


@lago_endpoint
async def finalize_invoice(request: web.Request) -> web.Response:
    row = await _invoicing(request).finalize(request.match_info["lago_id"])
    return await _invoice_response(request, row)


@lago_endpoint
async def download_invoice(request: web.Request) -> web.Response:
    """Lago answers with the invoice and its `file_url`; the PDF is rendered on request."""
    return await _invoice_response(request, await _stored(request))


@lago_endpoint
async def billing_run(request: web.Request) -> web.Response:
    """Run billing now (the background run does the same every `billing.run_interval`).
    Subscriptions it could not invoice are listed in `failed`; the others are invoiced."""
    result = await _invoicing(request).run()
    return json_response(
        {
            "billing_run": {
                "created": result.created,
                "refreshed": result.refreshed,
                "finalized": result.finalized,
                "failed": [
                    {"external_subscription_id": f.external_subscription_id, "reason": f.reason}
                    for f in result.failed
                ],
            }
        }
    )


async def invoice_file(request: web.Request) -> web.Response:
    """The rendered invoice: with the `signature` of its file_url, or the admin key."""
    services = _services(request)
    invoice_id = request.match_info["lago_id"]
    signature = request.query.get("signature", "")
    if not hmac.compare_digest(signature, _signature(services, invoice_id)):
        await services.admin(bearer_key(request))
    try:
        row = await _stored(request)
    except BillingNotFound as err:
        return lago_error(err)
    async with services.engine.connect() as conn:
        customer = await customers_repo.customer_by_id(conn, row["customer_id"] or "")
    who = customer or {"external_id": row["external_customer_id"]}
    invoice = stored_invoice(row)
    if request.match_info["kind"] == "html":
        html = render_html(invoice, who, number=invoice_number(row))
        return web.Response(text=html, content_type="text/html")
    name = f"{row.get('number') or row['id']}.pdf"
    return web.Response(
        body=render_pdf(invoice, who, number=invoice_number(row)),
        content_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}"'},
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/invoices", list_invoices)
    r.add_post("/api/v1/billing_runs", billing_run)
    r.add_get("/api/v1/invoices/{lago_id}", get_invoice)
    r.add_put("/api/v1/invoices/{lago_id}/refresh", refresh_invoice)
    r.add_put("/api/v1/invoices/{lago_id}/finalize", finalize_invoice)
    r.add_post("/api/v1/invoices/{lago_id}/download", download_invoice)
    r.add_get("/api/v1/invoices/{lago_id}/file.{kind:pdf|html}", invoice_file)
