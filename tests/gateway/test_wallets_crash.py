"""A gateway process killed (SIGKILL) with wallet holds in flight, on each hold book: its
ledger journal (in-process and Redis books) is replayed at restart, the holds it left expire
and the sweeper releases them, and the balance ends at exactly the credits less the usage that
completed. Killed after its journal reached the database, and (journaled books) before: then
every post comes back from the journal alone, and the holds still open, never sealed into it,
leave nothing, as their releases would."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from faregate.mockprovider.server import MockServer
from faregate.store.db import create_engine
from faregate.wallets import repository as repo
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import ADMIN_KEY
from tests.gateway.ledger_view import finishes
from tests.gateway.processes import prepare_database, start_replicas, stop_replicas

FAST = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
SLOW = {**FAST, "model": "mistral-large"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def _chat(session: aiohttp.ClientSession, url: str, key: str, body: dict) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        await r.read()
        return r.status, r.headers.get("x-faregate-price")


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, headers=ADMIN) as r:
        assert r.status == 200
        return await r.json()


@pytest.fixture(params=["sqlite", "postgres", "postgres+redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The database URL and extra settings of each hold book: in process with its journal
    (SQLite), the wallet row itself (PostgreSQL), Redis with its journal (PostgreSQL + Redis)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}", {}
        return
    extra: dict[str, Any] = {}
    if request.param == "postgres+redis":
        extra = {"redis_url": redis_url, "server": {"redis_prefix": redis_prefix}}
    url = await create_pg_database()
    yield url, extra
    await drop_pg_database(url)


async def test_holds_of_a_killed_process_are_released_by_the_sweep(
    tmp_path: Path, mock: MockServer, store: tuple[str, dict[str, Any]]
) -> None:
    url, book = store
    await _crash_and_recover(tmp_path, mock, url, book, flushed=True)


@pytest.fixture(params=["sqlite", "postgres+redis"])
async def journaled(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The hold books whose ledger entries go through the journal."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}", {}
        return
    url = await create_pg_database()
    yield url, {"redis_url": redis_url, "server": {"redis_prefix": redis_prefix}}
    await drop_pg_database(url)


async def test_a_process_killed_before_its_journal_was_written_out_is_replayed_at_restart(
    tmp_path: Path, mock: MockServer, journaled: tuple[str, dict[str, Any]]
) -> None:
    url, book = journaled
    await _crash_and_recover(tmp_path, mock, url, book, flushed=False)


async def _crash_and_recover(
    tmp_path: Path, mock: MockServer, url: str, book: dict[str, Any], *, flushed: bool
) -> None:
    """Three requests complete and four hang upstream; the process is SIGKILLed, with its
    ledger entries in the database (`flushed`) or only in its journal; a new process on the
    same data directory ends with exactly the three requests consumed."""
    key = await prepare_database(url)
    wallets: dict[str, Any] = {"hold_ttl_s": 2, "sweep_interval_s": 0.2}
    if not flushed:
        wallets["journal_flush_s"] = 3600  # nothing leaves the journal before the kill
    extra = {**book, "wallets": wallets}
    async with aiohttp.ClientSession() as s:
        async with s.put(f"{mock.url}/_mock/deployments/compat", json={"latency": 60}) as r:
            assert r.status == 200  # mistral-large answers after a minute: killed before that
        [first] = await start_replicas(tmp_path, url, mock.url, extra, count=1)
        try:
            body = {
                "wallet": {"external_customer_id": "acme", "rate_amount": "1", "paid_credits": "10"}
            }
            async with s.post(f"{first.url}/api/v1/wallets", json=body, headers=ADMIN) as r:
                wallet = (await r.json())["wallet"]
            done = [await _chat(s, first.url, key, FAST) for _ in range(3)]
            assert all(status == 200 for status, _ in done)
            used = sum(Decimal(price) for _, price in done)
            upstream = mock.stats.requests
            slow = [asyncio.create_task(_chat(s, first.url, key, SLOW)) for _ in range(4)]
            ledger = f"{first.url}/api/v1/wallets/{wallet['lago_id']}/ledger"
            for _ in range(200):  # the four holds are taken before upstream (flushed: stored)
                if flushed:
                    entries = (await _get(s, ledger))["entries"]  # the route flushes
                    finished = {e["hold_id"] for e in entries if e["kind"] == "post"}
                    if len({e["hold_id"] for e in entries if e["kind"] == "hold"} - finished) == 4:
                        break
                elif mock.stats.requests - upstream == 4:
                    break
                await asyncio.sleep(0.05)
            if not flushed:
                assert await _stored_kinds(url, wallet["lago_id"]) == ["credit"]
            first.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.process.wait)
            for task in slow:
                task.cancel()
            await asyncio.gather(*slow, return_exceptions=True)
        finally:
            await stop_replicas([first])

        [second] = await start_replicas(tmp_path, url, mock.url, extra, count=1)
        try:
            found: dict[str, Any] = {}
            for _ in range(200):  # the holds expire after 2 s; the sweep runs every 0.2 s
                found = (await _get(s, f"{second.url}/api/v1/wallets/{wallet['lago_id']}"))[
                    "wallet"
                ]
                if found["credits_ongoing_usage_balance"] == "0.00000":
                    break
                await asyncio.sleep(0.05)
            assert found["credits_ongoing_usage_balance"] == "0.00000"
            entries = (await _get(s, ledger.replace(first.url, second.url)))["entries"]
            kinds = [e["kind"] for e in entries]
            if flushed:
                # The four open holds were stored and released by the sweep; a completed
                # request's hold was stored on its own only if a batch was stored while it ran.
                assert 4 <= kinds.count("hold") <= 7
                assert kinds.count("release") == 4
            else:
                # Nothing was sealed before the kill: the completed requests' holds were
                # journaled folded into their posts, and the four open ones never were.
                assert kinds.count("hold") == 0 and kinds.count("release") == 0
            assert [e["kind"] for e in finishes(entries)].count("post") == 3
            assert kinds.count("post") == 3

            def total(account: str) -> Decimal:
                return sum((Decimal(e[account]) for e in entries), Decimal(0))

            # Exact, in the ledger: only the three completed requests were consumed.
            assert total("consumed") == used and total("held") == 0
            assert total("available") == 10 - used
        finally:
            await stop_replicas([second])


async def _stored_kinds(url: str, wallet_id: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return [e["kind"] for e in await repo.entries_of(conn, wallet_id)]
    finally:
        await engine.dispose()
