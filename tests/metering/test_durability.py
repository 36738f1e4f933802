"""No acknowledged usage is lost when the server process is killed: a real `faregate serve`
process takes gateway chat requests and external events, is SIGKILLed as soon as the last
response arrives (before its writer's next flush), and is started again on the same database
and data directory. Every acknowledged request and event is then stored exactly once, and
rolled up once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from sqlalchemy import func, select

from faregate.auth import repository as customers
from faregate.auth.service import KeyService
from faregate.billing import repository as repo
from faregate.mockprovider.server import MockServer
from faregate.store.db import create_engine
from faregate.store.tables.metering import requests, usage_rollups
from tests.conftest import create_pg_database, drop_pg_database, free_port, migrated
from tests.gateway.conftest import gateway_config, mock  # noqa: F401  (the mock fixture)
from tests.stored_events import stored_events

ADMIN = "fg_admin_durability"
CHAT = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


async def _catalog(url: str) -> str:
    await migrated(url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        customer = await customers.insert_customer(conn, {"external_id": "acme"})
        await repo.insert_metric(
            conn,
            {
                "code": "calls",
                "name": "Calls",
                "aggregation_type": "sum_agg",
                "field_name": "n",
                "filters": [],
            },
        )
        await repo.insert_plan(
            conn,
            {
                "code": "p",
                "name": "P",
                "interval": "monthly",
                "amount_cents": 0,
                "amount_currency": "USD",
                "charges": [
                    {
                        "billable_metric_code": "calls",
                        "charge_model": "standard",
                        "properties": {"amount": "1"},
                    }
                ],
            },
        )
        await repo.insert_subscription(
            conn,
            {
                "external_id": "sub_d",
                "external_customer_id": "acme",
                "customer_id": customer["id"],
                "plan_code": "p",
                "status": "active",
                "billing_time": "calendar",
                "subscription_at": datetime(2020, 1, 1, tzinfo=UTC),
            },
        )
    key, _ = await KeyService(engine, ADMIN).create_key(
        name="d", customer_external_id="acme", external_subscription_id="sub_d"
    )
    await engine.dispose()
    return key


def _serve(config: Path, port: int, url: str, data: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FAREGATE_DATABASE_URL": url,
        "FAREGATE_ADMIN_KEY": ADMIN,
        "FAREGATE_DATA_DIR": str(data),
        "FAREGATE_LOG_LEVEL": "warning",
    }
    exe = [sys.executable, "-m", "faregate", "serve", "--config", str(config), "--port", str(port)]
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(exe, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            assert proc.poll() is None, "the server exited"
            try:
                async with s.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the server did not start")


async def _traffic(base: str, key: str) -> tuple[set[str], dict[str, int]]:
    """Chat requests and event batches at once; returns what was acknowledged."""
    acked_requests: set[str] = set()
    acked_events: dict[str, int] = {}

    async def chat(s: aiohttp.ClientSession) -> None:
        async with s.post(
            f"{base}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
        ) as r:
            await r.read()
            if r.status == 200:
                acked_requests.add(r.headers["x-faregate-request-id"])

    async def batch(s: aiohttp.ClientSession, b: int) -> None:
        items = [
            {
                "transaction_id": f"b{b}-{i}",
                "external_subscription_id": "sub_d",
                "code": "calls",
                "properties": {"n": i + 1},
            }
            for i in range(50)
        ]
        # Every other batch repeats half of the previous one: repeats count once.
        if b % 2:
            items[:25] = [
                {**item, "transaction_id": f"b{b - 1}-{i}", "properties": {"n": i + 1}}
                for i, item in enumerate(items[:25])
            ]
        async with s.post(
            f"{base}/api/v1/events/batch",
            json={"events": items},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as r:
            await r.read()
            if r.status == 200:
                for item in items:
                    acked_events[item["transaction_id"]] = item["properties"]["n"]

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(chat(s) for _ in range(30)), *(batch(s, b) for b in range(20)))
    return acked_requests, acked_events


async def _stored(url: str) -> tuple[list[str], list[str], int, Any]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        reqs = [r[0] for r in await conn.execute(select(requests.c.id))]
        evs = [e["transaction_id"] for e in await stored_events(conn, code="calls")]
        rolled = (
            await conn.execute(
                select(func.sum(usage_rollups.c.events_count)).where(
                    usage_rollups.c.code == "calls"
                )
            )
        ).scalar_one()
        values = [
            r[0]
            for r in await conn.execute(
                select(usage_rollups.c.value_sum).where(usage_rollups.c.code == "calls")
            )
        ]
    await engine.dispose()
    return reqs, evs, int(rolled or 0), sum(float(v) for v in values)


async def _gateway_events(url: str) -> list[str]:
    """Transaction ids of the gateway's own `tokens` and `requests` events."""
    engine = create_engine(url)
    async with engine.connect() as conn:
        found = await stored_events(conn)
        ids = [e["transaction_id"] for e in found if e["code"] in ("tokens", "requests")]
    await engine.dispose()
    return ids


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_acknowledged_usage_survives_a_sigkill(
    backend: str,
    tmp_path: Path,
    mock: MockServer,  # noqa: F811  (the fixture)
) -> None:
    url = (
        await create_pg_database()
        if backend == "postgres"
        else f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    )
    try:
        key = await _catalog(url)
        config = tmp_path / "faregate.yaml"
        settings = gateway_config(
            mock.url,
            {
                "server": {"instance": "durable"},  # the journal directory survives the restart
                "billing": {"run_interval": 0, "default_metrics": False},
                "metering": {"flush_interval": 3600},  # nothing is written before the kill
            },
        )
        config.write_text(yaml.safe_dump(settings))
        port, log = free_port(), tmp_path / "server.log"
        base = f"http://127.0.0.1:{port}"
        proc = _serve(config, port, url, tmp_path / "data", log)
        try:
            await _ready(base, proc)
            acked_requests, acked_events = await _traffic(base, key)
            os.kill(proc.pid, signal.SIGKILL)  # right after the responses: no flush ran since
            proc.wait(10)
            assert acked_requests and acked_events
            assert await _stored(url) == ([], [], 0, 0)  # all of it only in the journal
            proc = _serve(config, port, url, tmp_path / "data", log)
            await _ready(base, proc)  # replays the journal before serving
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        reqs, evs, rolled, total = await _stored(url)
        assert acked_requests <= set(reqs) and len(reqs) == len(set(reqs))
        assert sorted(evs) == sorted(acked_events)  # each acknowledged event exactly once
        assert rolled == len(acked_events)
        assert total == sum(acked_events.values())
        # Each acknowledged chat's own events (requests, input and output tokens), once each.
        suffixes = ("requests", "tokens:input", "tokens:output")
        expected = sorted(f"{r}:{suffix}" for r in acked_requests for suffix in suffixes)
        assert sorted(await _gateway_events(url)) == expected
    finally:
        if backend == "postgres":
            await drop_pg_database(url)
