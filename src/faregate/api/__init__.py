"""HTTP surface only: parse, validate, call one service, render. No business rules here."""
