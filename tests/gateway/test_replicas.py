"""Two gateways on one PostgreSQL and one Redis share their limits and budgets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from faregate.mockprovider.server import MockServer
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import start_gateway

CHAT = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


async def _chat(url: str, key: str) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
        ) as r,
    ):
        await r.read()
        return r.status


async def test_two_replicas_share_one_rate_limit_through_redis(
    tmp_path: Path, mock: MockServer, redis_url: str, redis_prefix: str
) -> None:
    url = await create_pg_database()
    extra = {
        "redis_url": redis_url,
        "server": {"redis_prefix": redis_prefix},
        "rate_limits": {"rules": [{"id": "k", "scope": "key", "match": "*", "rpm": 10}]},
    }
    a = await start_gateway(tmp_path / "a", url, mock, extra)
    b = None
    try:
        b = await start_gateway(tmp_path / "b", url, mock, extra, key_for=a)
        statuses = await asyncio.gather(*(_chat(gw.url, a.key) for gw in (a, b) for _ in range(15)))
        assert statuses.count(200) == 10 and statuses.count(429) == 20
    finally:
        await a.runner.cleanup()
        if b is not None:
            await b.runner.cleanup()
        await drop_pg_database(url)
