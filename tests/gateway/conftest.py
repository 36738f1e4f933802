"""A real gateway on loopback in front of the in-process mock provider, on SQLite or
PostgreSQL, with a customer and an API key; tests drive it with the official SDKs."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from faregate import app as app_module
from faregate.app import start_app
from faregate.auth import repository
from faregate.auth.service import KeyService
from faregate.config import Settings, load_settings
from faregate.logs import JsonFormatter
from faregate.mockprovider.server import MockServer, start_mock
from faregate.store.db import create_engine
from tests.conftest import create_pg_database, drop_pg_database, free_port, migrated

ADMIN_KEY = "fg_admin_test_key"


def gateway_config(mock_url: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "providers": {
            "openai": {"wire": "openai", "base_url": f"{mock_url}/d/openai/v1", "api_key": "k"},
            "anthropic": {
                "wire": "anthropic",
                "base_url": f"{mock_url}/d/anthropic",
                "api_key": "k",
            },
            "gemini": {"wire": "gemini", "base_url": f"{mock_url}/d/gemini", "api_key": "k"},
            "compat": {"wire": "openai", "base_url": f"{mock_url}/d/compat/v1", "api_key": "k"},
        },
        "models": [
            {
                "name": "gpt-4o-mini",
                "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}],
            },
            {
                "name": "claude-sonnet-4",
                "deployments": [{"provider": "anthropic", "model": "claude-sonnet-4"}],
            },
            {
                "name": "gemini-2.5-flash",
                "deployments": [{"provider": "gemini", "model": "gemini-2.5-flash"}],
            },
            {
                "name": "mistral-large",
                "deployments": [{"provider": "compat", "model": "mistral-large"}],
            },
            {
                "name": "text-embedding-3-small",
                "kind": "embeddings",
                "deployments": [{"provider": "openai", "model": "text-embedding-3-small"}],
            },
            {
                "name": "dall-e-3",
                "kind": "images",
                "deployments": [{"provider": "openai", "model": "dall-e-3"}],
            },
        ],
    }
    config.update(extra or {})
    return config


@dataclass
class Running:
    url: str
    key: str
    settings: Settings
    mock: MockServer
    runner: Any

    @property
    def services(self) -> Any:
        from faregate.api.state import SERVICES

        return self.runner.app[SERVICES]


async def start_gateway(
    tmp_path: Path,
    database_url: str,
    mock: MockServer,
    extra: dict[str, Any] | None = None,
    key_for: Running | None = None,
) -> Running:
    """Start a gateway; with `key_for`, a second replica on the same database and key."""
    env = {
        "FAREGATE_DATABASE_URL": database_url,
        "FAREGATE_ADMIN_KEY": ADMIN_KEY,
        "FAREGATE_DATA_DIR": str(tmp_path),
    }
    settings = load_settings(env=env, overrides=gateway_config(mock.url, extra))
    settings.port = free_port()
    if key_for is not None:
        key = key_for.key
    else:
        await migrated(settings.database_url)
        engine = create_engine(settings.database_url)
        async with engine.begin() as conn:
            await repository.insert_customer(conn, {"external_id": "acme", "name": "Acme"})
        key, _ = await KeyService(engine, ADMIN_KEY).create_key(
            name="t", customer_external_id="acme", team="research"
        )
        await engine.dispose()
    runner = await start_app(settings)
    return Running(f"http://127.0.0.1:{settings.port}", key, settings, mock, runner)


@pytest.fixture
def opened_sessions(monkeypatch: pytest.MonkeyPatch) -> list[aiohttp.ClientSession]:
    """The upstream HTTP sessions a server started in the test opens, as it opens them."""
    opened: list[aiohttp.ClientSession] = []
    make_session = app_module._http_session

    def recorded() -> aiohttp.ClientSession:
        opened.append(make_session())
        return opened[-1]

    monkeypatch.setattr(app_module, "_http_session", recorded)
    return opened


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    server = await start_mock()
    yield server
    await server.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def gateway(
    request: pytest.FixtureRequest, tmp_path: Path, mock: MockServer
) -> AsyncIterator[Running]:
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    running = await start_gateway(tmp_path, url, mock)
    yield running
    await running.runner.cleanup()
    if postgres:
        await drop_pg_database(url)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record, at every level, formatted by the production JSON formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def log_lines(out: io.StringIO) -> list[dict[str, Any]]:
    """The captured JSON log lines, parsed."""
    return [orjson.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def sse_events(raw: bytes) -> list[bytes]:
    """A stream's lines without its SSE comments (the cost block at its end)."""
    return [line for line in raw.split(b"\n") if not line.startswith(b":")]


def sse_comment(raw: bytes, name: str) -> Decimal:
    """The value of one `: name value` comment line of a stream (its cost block)."""
    prefix = f": {name} ".encode()
    return Decimal(
        next(line for line in raw.split(b"\n") if line.startswith(prefix))[len(prefix) :].decode()
    )
