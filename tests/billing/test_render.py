"""Invoice documents: the HTML shows every line and escapes customer data; the PDF is a PDF
whose text (read from its content streams) holds every line and total, in order."""

from __future__ import annotations

import re
import zlib
from datetime import UTC, datetime

from faregate.billing.charges import plan_aggregates
from faregate.billing.events import Event
from faregate.billing.invoices import Invoice, build_invoice
from faregate.billing.periods import first_period
from faregate.billing.plans import Subscription
from faregate.billing.render import InvoiceCustomer, render_html, render_pdf
from tests.billing.mistral import mistral_metric, mistral_plan


def invoice() -> Invoice:
    metrics = {"tokens": mistral_metric()}
    plan = mistral_plan()
    sub = Subscription("sub-1", "acme", plan.code, datetime(2025, 1, 1, tzinfo=UTC))
    period = first_period(sub, "monthly")
    events = [
        Event(
            "a",
            "tokens",
            datetime(2025, 1, 2, tzinfo=UTC),
            {"model": "mistral-large", "type": "input", "tokens": 2_500_000},
        )
    ]
    aggregates = plan_aggregates(plan, metrics, events, period)
    return build_invoice(sub, plan, metrics, aggregates, period, currency="EUR")


def test_html_invoice_lists_lines_and_totals_and_escapes_customer_data() -> None:
    customer = {"external_id": "acme", "name": "ACME <script>", "city": "Paris"}
    html = render_html(invoice(), customer, number="FG-000042")
    assert "<title>Invoice FG-000042</title>" in html
    assert "<h1>Invoice FG-000042</h1>" in html
    assert "Subscription sub-1" in html
    assert "Tokens • mistral-large input" in html
    assert "12.00 EUR" in html
    assert "32.00 EUR" in html  # 20.00 fee + 12.00 tokens
    assert "2025-01-01 to 2025-01-31" in html
    assert "ACME &lt;script&gt;" in html
    assert "<script>" not in html


def test_pdf_invoice_is_a_pdf_even_with_characters_outside_latin_1() -> None:
    pdf = render_pdf(
        invoice(),
        InvoiceCustomer("acme", name="Ünïcode • 株式会社", email="billing@acme.test"),
        number="FG-000001",
    )
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert len(pdf) > 1000


def pdf_texts(pdf: bytes) -> list[str]:
    """The text shown by each `(…) Tj` of the PDF's zlib content streams, in drawing order
    (fpdf2 writes core-font text this way, latin-1, escaping only parentheses and backslash)."""
    texts = []
    for stream in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            content = zlib.decompress(stream.group(1))
        except zlib.error:  # not zlib data: not a page content stream
            continue
        for shown in re.finditer(rb"\(((?:[^()\\]|\\.)*)\) Tj", content):
            texts.append(re.sub(rb"\\([()\\])", rb"\1", shown.group(1)).decode("latin-1"))
    return texts


def test_pdf_invoice_text_holds_every_line_and_total_in_order() -> None:
    customer = InvoiceCustomer("acme", name="Acme (Paris)")
    texts = pdf_texts(render_pdf(invoice(), customer, number="FG-000042"))
    assert texts == [
        "Invoice FG-000042", "DRAFT", "Issued 2025-02-01",
        "Period 2025-01-01 to 2025-01-31", "Subscription sub-1", "Billed to", "Acme (Paris)", "Customer acme",
        "Item", "Units", "Unit price", "Amount",
        "Mistral API", "2025-01-01 to 2025-01-31", "1", "20 EUR", "20.00 EUR",
        # 2,500,000 tokens bill 3 started millions at 4 EUR: 12 EUR, 0.0000048 EUR a token
        "Tokens \u00b7 mistral-large input", "2025-01-01 to 2025-01-31", "2500000",
        "0.0000048 EUR", "12.00 EUR",
        "Fees", "32.00 EUR", "Taxes (0%)", "0.00 EUR", "Subtotal", "32.00 EUR",
        "Prepaid credits", "0.00 EUR", "Total due", "32.00 EUR",
    ]  # fmt: skip
