"""The ledger API lists every entry: the JSON pages with Lago's meta, and the CSV export
streams all of it, however many entries the wallet has."""

from __future__ import annotations

import asyncio
import csv
import io

import aiohttp
from lago_python_client.models import Wallet

from faregate.wallets import ledger
from faregate.wallets import repository as repo
from tests.gateway.conftest import ADMIN_KEY, Running
from tests.gateway.test_wallets import lago

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ENTRIES = 10_050  # past the 10,000 the export once stopped at, and past a CSV batch


async def test_the_ledger_pages_its_json_and_exports_every_entry_as_csv(
    gateway: Running,
) -> None:
    client = lago(gateway)
    wallet = await asyncio.to_thread(
        client.wallets.create,
        Wallet(external_customer_id="acme", rate_amount="1", paid_credits="1"),
    )
    entries = [ledger.credit(wallet.lago_id, f"bulk-{i}", 1) for i in range(ENTRIES - 1)]
    async with gateway.services.engine.begin() as conn:
        await repo.apply_entries(conn, entries)
    base = f"{gateway.url}/api/v1/wallets/{wallet.lago_id}/ledger"
    async with aiohttp.ClientSession(headers=ADMIN) as s:
        seen: list[int] = []
        page, metas = 1, []
        while page is not None:
            async with s.get(base, params={"page": page, "per_page": 1000}) as r:
                assert r.status == 200
                body = await r.json()
            seen += [e["id"] for e in body["entries"]]
            metas.append(body["meta"])
            page = body["meta"]["next_page"]
        assert metas[0] == {
            "current_page": 1,
            "next_page": 2,
            "prev_page": None,
            "total_pages": 11,
            "total_count": ENTRIES,
        }
        assert metas[-1]["current_page"] == 11 and metas[-1]["prev_page"] == 10
        assert len(seen) == ENTRIES and seen == sorted(set(seen))

        async with s.get(f"{base}.csv") as r:
            assert r.status == 200 and r.content_type == "text/csv"
            text = await r.text()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [int(row["id"]) for row in rows] == seen  # complete, in order, no repeat
        async with s.get(f"{base}.csv", params={"after_id": str(seen[-3])}) as r:
            tail = list(csv.DictReader(io.StringIO(await r.text())))
        assert [int(row["id"]) for row in tail] == seen[-2:]
        async with s.get(base, params={"after_id": "x"}) as r:
            assert r.status == 422
        # '²' passes str.isdigit but not int(), and an id past a BIGINT failed the query:
        # both were 500s. The largest id there can be is an empty page.
        for junk in ("²", str(2**63)):
            async with s.get(base, params={"after_id": junk}) as r:
                assert r.status == 422
                assert (await r.json())["error_details"] == {"after_id": ["invalid_value"]}
        async with s.get(base, params={"after_id": str(2**63 - 1)}) as r:
            assert r.status == 200
            assert (await r.json())["entries"] == []
