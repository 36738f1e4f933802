"""Invoice documents: HTML through Jinja2 (templates/invoice.html) and PDF through fpdf2.
The only billing module that imports a rendering library; it formats, never computes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from faregate.billing.invoices import Fee, Invoice
from faregate.money import decimal_str, minor_units

# PDF core fonts are Latin-1: bullets and dashes are mapped, any other character replaced.
_LATIN1 = str.maketrans({"\u2022": "\u00b7", "\u2013": "-", "\u2014": "-", "\u2019": "'"})


@dataclass(frozen=True, slots=True)
class InvoiceCustomer:
    external_id: str
    name: str | None = None
    email: str | None = None
    address: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, row: Mapping[str, object]) -> InvoiceCustomer:
        """From a customer row or Lago customer JSON (external_id, name, email, address...)."""
        keys = ("address_line1", "address_line2", "zipcode", "city", "country")
        email = row.get("email")
        return cls(
            external_id=str(row.get("external_id", "")),
            name=str(row["name"]) if row.get("name") else None,
            email=str(email) if email else None,
            address=tuple(str(row[k]) for k in keys if row.get(k)),
        )


@dataclass(frozen=True, slots=True)
class _FeeView:
    name: str
    period: str
    units: str
    unit_amount: str
    amount: str


@dataclass(frozen=True, slots=True)
class _View:
    """Everything the documents show, as display strings."""

    number: str
    status: str
    issuing_date: str
    period: str
    subscription: str
    customer_name: str
    customer_lines: tuple[str, ...]
    customer_id: str
    fees: tuple[_FeeView, ...]
    totals: tuple[tuple[str, str], ...]


def render_html(
    invoice: Invoice, customer: InvoiceCustomer | Mapping[str, object], *, number: str
) -> str:
    """The invoice as an HTML page; `number` is the invoice's (lago_invoice.invoice_number)."""
    environment = Environment(
        loader=PackageLoader("faregate.billing", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
    )
    template = environment.get_template("invoice.html")
    return template.render(view=_view(invoice, _customer(customer), number))


def render_pdf(
    invoice: Invoice, customer: InvoiceCustomer | Mapping[str, object], *, number: str
) -> bytes:
    """The invoice as a PDF; `number` is the invoice's (lago_invoice.invoice_number)."""
    view = _view(invoice, _customer(customer), number)
    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(f"Invoice {view.number}"))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    _line(pdf, f"Invoice {view.number}", 9)
    pdf.set_font("Helvetica", "", 10)
    for text in (
        view.status.upper(),
        f"Issued {view.issuing_date}",
        f"Period {view.period}",
        f"Subscription {view.subscription}",
        "",
    ):
        _line(pdf, text, 5)
    pdf.set_font("Helvetica", "B", 10)
    _line(pdf, "Billed to", 5)
    pdf.set_font("Helvetica", "", 10)
    for text in (view.customer_name, *view.customer_lines, f"Customer {view.customer_id}", ""):
        _line(pdf, text, 5)
    _fee_table(pdf, view)
    return bytes(pdf.output())


def _line(pdf: FPDF, text: str, height: float) -> None:
    pdf.cell(0, height, _latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _fee_table(pdf: FPDF, view: _View) -> None:
    aligns = ("LEFT", "RIGHT", "RIGHT", "RIGHT")
    with pdf.table(col_widths=(90, 25, 35, 35), text_align=aligns) as table:
        table.row([_latin1(h) for h in ("Item", "Units", "Unit price", "Amount")])
        for fee in view.fees:
            cells = (f"{fee.name}\n{fee.period}", fee.units, fee.unit_amount, fee.amount)
            table.row([_latin1(c) for c in cells])
        for label, amount in view.totals:
            table.row(["", "", _latin1(label), _latin1(amount)])


def _latin1(text: str) -> str:
    return text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")


def _customer(customer: InvoiceCustomer | Mapping[str, object]) -> InvoiceCustomer:
    if isinstance(customer, InvoiceCustomer):
        return customer
    return InvoiceCustomer.from_mapping(customer)


def _view(invoice: Invoice, customer: InvoiceCustomer, number: str) -> _View:
    currency = invoice.currency
    totals = (
        ("Fees", _money(invoice.fees_amount_cents, currency)),
        (f"Taxes ({decimal_str(invoice.tax_rate)}%)", _money(invoice.taxes_amount_cents, currency)),
        ("Subtotal", _money(invoice.sub_total_including_taxes_amount_cents, currency)),
        ("Prepaid credits", _money(-invoice.prepaid_credit_amount_cents, currency)),
        ("Total due", _money(invoice.total_amount_cents, currency)),
    )
    return _View(
        number=number,
        status=invoice.status,
        issuing_date=invoice.issuing_date.isoformat(),
        period=_period(invoice.from_datetime, invoice.to_datetime),
        subscription=invoice.external_subscription_id,
        customer_name=customer.name or customer.external_id,
        customer_lines=(*customer.address, *((customer.email,) if customer.email else ())),
        customer_id=customer.external_id,
        fees=tuple(_fee_view(fee) for fee in invoice.fees),
        totals=totals,
    )


def _fee_view(fee: Fee) -> _FeeView:
    return _FeeView(
        name=fee.invoice_display_name,
        period=_period(fee.from_datetime, fee.to_datetime),
        units=decimal_str(fee.units),
        unit_amount=f"{_unit_price(fee.precise_unit_amount)} {fee.amount_currency}",
        amount=_money(fee.amount_cents, fee.amount_currency),
    )


def _money(cents: int, currency: str) -> str:
    """Minor units shown in major units with the currency code (exact: no rounding here)."""
    exponent = minor_units(currency)
    return f"{Decimal(cents).scaleb(-exponent):,.{exponent}f} {currency}"


def _period(start: datetime, end: datetime) -> str:
    """Dates shown inclusive: [Jan 1, Feb 1) reads "2025-01-01 to 2025-01-31"."""
    return f"{start.date()} to {(end - timedelta(microseconds=1)).date()}"


def _unit_price(value: Decimal) -> str:
    """An informative unit price; a non-terminating quotient is shown to 10 decimals."""
    text = decimal_str(value)
    if "." in text and len(text.split(".")[1]) > 10:
        return format(value, ".10f").rstrip("0").rstrip(".")
    return text
