"""Replicas on PostgreSQL without Redis keep rate-limit, budget and cache counters per
process: the gateway says so once at startup, and only then."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from faregate.config import load_settings
from faregate.gateway.assembly import per_process_controls
from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import log_lines, start_gateway

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/x"
SQLITE = "sqlite+aiosqlite:///x.db"
LIMITS = {"rate_limits": {"rules": [{"id": "k", "scope": "key", "match": "*", "rpm": 60}]}}
BUDGETS = {
    "budgets": [
        {"id": "b", "scope": "team", "match": "*", "basis": "cost", "amount": "5", "period": "day"}
    ]
}
CACHE = {"cache": {"enabled": True}}


def _controls(database_url: str, redis: bool, config: dict[str, Any]) -> list[str]:
    env = {"FAREGATE_DATABASE_URL": database_url}
    if redis:
        env["FAREGATE_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    return per_process_controls(load_settings(env=env, overrides=config))


@pytest.mark.parametrize(
    ("database_url", "redis", "config", "expected"),
    [
        (PG, False, {**LIMITS, **BUDGETS, **CACHE}, ["rate_limits", "budgets", "cache"]),
        (PG, False, BUDGETS, ["budgets"]),
        (PG, False, {}, []),  # nothing to share
        (PG, True, {**LIMITS, **BUDGETS, **CACHE}, []),  # Redis shares it
        (SQLITE, False, {**LIMITS, **BUDGETS, **CACHE}, []),  # one process by nature
    ],
    ids=["pg-all", "pg-budgets", "pg-nothing", "pg-redis", "sqlite"],
)
def test_controls_are_per_process_only_on_postgresql_without_redis(
    database_url: str, redis: bool, config: dict[str, Any], expected: list[str]
) -> None:
    assert _controls(database_url, redis, config) == expected


def _warnings(out: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in log_lines(out) if "per_process" in line]


async def test_startup_on_postgresql_without_redis_warns_once(
    tmp_path: Path, mock: MockServer, pg_url: str, captured_logs: io.StringIO
) -> None:
    gw = await start_gateway(tmp_path, pg_url, mock, {**LIMITS, **BUDGETS})
    await gw.runner.cleanup()
    [warning] = _warnings(captured_logs)
    assert warning["level"] == "warning"
    assert warning["per_process"] == ["rate_limits", "budgets"]
    assert "FAREGATE_REDIS_URL" in warning["msg"] and "per process" in warning["msg"]


async def test_startup_with_redis_or_on_sqlite_does_not_warn(
    tmp_path: Path,
    mock: MockServer,
    pg_url: str,
    redis_url: str,
    redis_prefix: str,
    captured_logs: io.StringIO,
) -> None:
    shared = {**LIMITS, **BUDGETS, "redis_url": redis_url, "server": {"redis_prefix": redis_prefix}}
    gw = await start_gateway(tmp_path / "pg", pg_url, mock, shared)
    await gw.runner.cleanup()
    local = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, LIMITS)
    await local.runner.cleanup()
    assert _warnings(captured_logs) == []
