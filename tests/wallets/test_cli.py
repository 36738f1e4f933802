"""`faregate wallets …` on a database directly: create with credits (what the benchmark
harness runs), top up, list transactions, export the ledger as CSV."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from pathlib import Path
from typing import Any

import orjson

from faregate.auth import repository
from faregate.cli import main
from faregate.store.db import create_engine
from tests.conftest import migrated


def run(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()


def as_json(text: str) -> dict[str, Any]:
    return dict(orjson.loads(text))


async def test_the_wallets_command_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    await migrated(url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await repository.insert_customer(conn, {"external_id": "acme", "currency": "USD"})
    await engine.dispose()
    db = ("--database-url", url)

    created = as_json(
        await asyncio.to_thread(
            run, "wallets", "create", "--customer", "acme", "--credits", "1000000", *db
        )
    )
    wallet = created["wallet"]
    assert wallet["credits_balance"] == "1000000.00000" and wallet["balance_cents"] == 100_000_000
    wallet_id = wallet["lago_id"]
    topped = as_json(
        await asyncio.to_thread(
            run, "wallets", "top-up", wallet_id, "--granted", "5", "--void", "2", *db
        )
    )
    assert topped["wallet"]["credits_balance"] == "1000003.00000"
    listed = as_json(await asyncio.to_thread(run, "wallets", "list", "--customer", "acme", *db))
    assert [w["lago_id"] for w in listed["wallets"]] == [wallet_id]
    history = as_json(await asyncio.to_thread(run, "wallets", "transactions", wallet_id, *db))
    assert [t["transaction_status"] for t in history["wallet_transactions"]] == [
        "purchased",
        "granted",
        "voided",
    ]
    rows = list(
        csv.DictReader(
            io.StringIO(await asyncio.to_thread(run, "wallets", "export", wallet_id, *db))
        )
    )
    assert [r["kind"] for r in rows] == ["credit", "credit", "void"]
    assert sum(int(r["available"]) for r in rows) == 1000003
