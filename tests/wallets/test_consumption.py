"""The split of the credits an invoice applies between granted and purchased ones, drawn as
Lago's traceable wallets draw them: granted before purchased, oldest first, what earlier
invoices and voids drew gone; a refund of credits consumed above an invoice is no funding."""

from __future__ import annotations

from typing import Any

from faregate.wallets.consumption import granted_part_of_draw


def tx(kind: str, status: str, amount: int, invoice_id: str | None = None) -> dict[str, Any]:
    return {
        "transaction_type": kind,
        "transaction_status": status,
        "amount_nanos": amount,
        "invoice_id": invoice_id,
    }


def test_granted_credits_are_drawn_before_purchased_ones() -> None:
    funded = [tx("inbound", "purchased", 100), tx("inbound", "granted", 30)]
    assert granted_part_of_draw(funded, 20) == 20
    assert granted_part_of_draw(funded, 50) == 30


def test_what_earlier_invoices_and_voids_drew_is_gone() -> None:
    history = [
        tx("inbound", "granted", 30),
        tx("inbound", "purchased", 100),
        tx("outbound", "invoiced", 20, "inv-1"),
        tx("outbound", "voided", 5),
    ]
    assert granted_part_of_draw(history, 10) == 5  # 5 granted left, then purchased


def test_credits_granted_later_are_drawn_first_and_refunds_are_no_funding() -> None:
    history = [
        tx("inbound", "purchased", 100),
        tx("outbound", "invoiced", 40, "inv-1"),
        tx("inbound", "granted", 7, "inv-1"),  # consumed above inv-1, given back
        tx("inbound", "granted", 10),
    ]
    assert granted_part_of_draw(history, 15) == 10


def test_a_draw_past_every_top_up_counts_as_purchased() -> None:
    assert granted_part_of_draw([tx("inbound", "granted", 3)], 10) == 3
    assert granted_part_of_draw([], 10) == 0
