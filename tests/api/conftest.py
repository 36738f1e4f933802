"""A real gateway on loopback (SQLite and PostgreSQL) for the Lago v1 billing API, driven by
the official lago-python-client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from lago_python_client.client import Client

import faregate.store.tables.billing  # noqa: F401  (registers the billing tables)
from faregate.app import start_app
from faregate.config import load_settings
from faregate.store.db import create_engine
from faregate.store.tables.base import metadata
from tests.conftest import create_pg_database, drop_pg_database, free_port
from tests.stored_events import stored_events

ADMIN_KEY = "fg_admin_billing_test"


@dataclass
class Billing:
    url: str
    client: Client
    runner: Any

    @property
    def engine(self) -> Any:
        from faregate.api.state import SERVICES

        return self.runner.app[SERVICES].engine

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def event_count(self, **where: str) -> int:
        from faregate.api.state import SERVICES

        await self.runner.app[SERVICES].writer.flush()
        async with self.engine.connect() as conn:
            return len(await stored_events(conn, **where))

    async def post(self, path: str, body: Any, key: str = ADMIN_KEY) -> httpx.Response:
        return await self.request("POST", path, body, key)

    async def put(self, path: str, body: Any) -> httpx.Response:
        return await self.request("PUT", path, body)

    async def get(self, path: str) -> httpx.Response:
        return await self.request("GET", path)

    async def request(
        self, method: str, path: str, body: Any = None, key: str = ADMIN_KEY
    ) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.request(
                method, f"{self.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}
            )


@pytest.fixture(params=["sqlite", "postgres"])
async def billing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Billing]:
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    overrides = {
        "providers": {
            "openai": {"wire": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}
        },
        "models": [
            {"name": "gpt-4o-mini", "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]}
        ],
        # These tests define their own `tokens` metric (the built-in one is tested elsewhere).
        "billing": {"default_metrics": False, "run_interval": 0},
    }
    settings = load_settings(
        env={
            "FAREGATE_DATABASE_URL": url,
            "FAREGATE_ADMIN_KEY": ADMIN_KEY,
            "FAREGATE_DATA_DIR": str(tmp_path),
        },
        overrides=overrides,
    )
    settings.port = free_port()
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()
    runner = await start_app(settings)
    base = f"http://127.0.0.1:{settings.port}"
    yield Billing(base, Client(api_key=ADMIN_KEY, api_url=base + "/"), runner)
    await runner.cleanup()
    if postgres:
        await drop_pg_database(url)
