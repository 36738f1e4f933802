"""Two gateway processes (`faregate serve`, separate operating-system processes) on one
PostgreSQL, without and with Redis, never spend past a wallet together: the hold is one
conditional UPDATE of the wallet row, or one Lua script."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faregate.mockprovider.server import MockServer
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.processes import prepare_database, start_replicas, stop_replicas
from tests.gateway.test_wallets import assert_exactly_37_of_200


@pytest.fixture
async def pg() -> AsyncIterator[str]:
    url = await create_pg_database()
    yield url
    await drop_pg_database(url)


async def test_two_processes_on_postgresql_spend_exactly_a_wallet_covering_37_of_200(
    tmp_path: Path, mock: MockServer, pg: str
) -> None:
    key = await prepare_database(pg)
    replicas = await start_replicas(tmp_path, pg, mock.url, {})
    try:
        await assert_exactly_37_of_200([r.url for r in replicas], key, mock)
    finally:
        await stop_replicas(replicas)


async def test_two_processes_on_postgresql_and_redis_spend_exactly_a_wallet_covering_37_of_200(
    tmp_path: Path, mock: MockServer, pg: str, redis_url: str, redis_prefix: str
) -> None:
    key = await prepare_database(pg)
    extra = {"redis_url": redis_url, "server": {"redis_prefix": redis_prefix}}
    replicas = await start_replicas(tmp_path, pg, mock.url, extra)
    try:
        await assert_exactly_37_of_200([r.url for r in replicas], key, mock)
    finally:
        await stop_replicas(replicas)
