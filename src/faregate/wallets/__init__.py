"""Prepaid credit wallets: a double-entry ledger, two-phase holds on the request path,
real-time debits that telescope to the invoice, and top-up rules."""
