"""A deployment's own `rpm` / `tpm` through the running gateway: at its limit the router
moves on to the next deployment (counted in the shared counter store, so replicas on Redis
share it); unknown deployment keys are refused at startup."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from faregate.config import ConfigError, load_settings
from faregate.mockprovider.server import MockServer
from faregate.tokens import count_chat_input_tokens
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway

BODY = {"model": "limited", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def _config(mock_url: str, primary: dict[str, Any]) -> dict[str, Any]:
    def provider(name: str) -> dict[str, str]:
        return {"wire": "openai", "base_url": f"{mock_url}/d/{name}/v1", "api_key": "k"}

    return {
        "providers": {"lim-primary": provider("lim-primary"), "lim-backup": provider("lim-backup")},
        "models": [
            {
                "name": "limited",
                "strategy": "priority",
                "deployments": [
                    {"id": "lim-primary", "provider": "lim-primary", "model": "m", **primary},
                    {"id": "lim-backup", "provider": "lim-backup", "model": "m"},
                ],
            }
        ],
    }


async def _served(s: aiohttp.ClientSession, gw: Running) -> str:
    headers = {"Authorization": f"Bearer {gw.key}"}
    async with s.post(f"{gw.url}/v1/chat/completions", json=BODY, headers=headers) as r:
        assert r.status == 200, await r.text()
        return r.headers["x-faregate-deployment"]


async def test_a_deployment_at_its_rpm_sends_the_next_request_to_the_backup(
    tmp_path: Path, mock: MockServer
) -> None:
    config = _config(mock.url, {"rpm": 5, "region": "eu-west"})
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    try:
        async with aiohttp.ClientSession() as s:
            served = [await _served(s, gw) for _ in range(6)]
            assert served == ["lim-primary"] * 5 + ["lim-backup"]
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            async with s.get(f"{gw.url}/api/v1/deployments/health", headers=admin) as r:
                rows = {row["deployment"]: row for row in (await r.json())["deployments"]}
        assert mock.stats.requests_for(deployment="lim-primary") == 5
        assert mock.stats.requests_for(deployment="lim-backup") == 1
        primary = rows["lim-primary"]
        assert (primary["region"], primary["rpm"], primary["tpm"]) == ("eu-west", 5, None)
        assert primary["state"] == "closed"  # a limit is not an outage
        assert (primary["model"], primary["provider"]) == ("limited", "lim-primary")
    finally:
        await gw.runner.cleanup()


async def test_a_deployment_at_its_tpm_sends_the_next_request_to_the_backup(
    tmp_path: Path, mock: MockServer
) -> None:
    # Each call counts its estimate (prompt + max_tokens): two fit, a third does not.
    per_call = count_chat_input_tokens(BODY) + BODY["max_tokens"]
    config = _config(mock.url, {"tpm": 2 * per_call + per_call // 2})
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    try:
        async with aiohttp.ClientSession() as s:
            served = [await _served(s, gw) for _ in range(3)]
        assert served == ["lim-primary", "lim-primary", "lim-backup"]
    finally:
        await gw.runner.cleanup()


async def test_when_every_deployment_is_at_its_limit_the_client_gets_a_429_with_retry_after(
    tmp_path: Path, mock: MockServer
) -> None:
    config = _config(mock.url, {"rpm": 1})
    config["models"][0]["deployments"][1]["rpm"] = 1
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    try:
        async with aiohttp.ClientSession() as s:
            assert [await _served(s, gw) for _ in range(2)] == ["lim-primary", "lim-backup"]
            headers = {"Authorization": f"Bearer {gw.key}"}
            async with s.post(f"{gw.url}/v1/chat/completions", json=BODY, headers=headers) as r:
                assert r.status == 429
                assert (await r.json())["error"]["code"] == "deployment_rate_limited"
                assert 50 <= int(r.headers["Retry-After"]) <= 60  # rpm 1: a minute per call
        assert mock.stats.requests_for(deployment="lim-primary") == 1
    finally:
        await gw.runner.cleanup()


async def test_two_replicas_share_a_deployments_rpm_through_redis(
    tmp_path: Path, mock: MockServer, redis_url: str, redis_prefix: str
) -> None:
    url = await create_pg_database()
    config = _config(mock.url, {"rpm": 6})
    config.update(redis_url=redis_url, server={"redis_prefix": redis_prefix})
    a = await start_gateway(tmp_path / "a", url, mock, config)
    b = None
    try:
        b = await start_gateway(tmp_path / "b", url, mock, config, key_for=a)
        async with aiohttp.ClientSession() as s:
            served = await asyncio.gather(*(_served(s, gw) for gw in (a, b) for _ in range(5)))
        assert served.count("lim-primary") == 6 and served.count("lim-backup") == 4
        assert mock.stats.requests_for(deployment="lim-primary") == 6
    finally:
        await a.runner.cleanup()
        if b is not None:
            await b.runner.cleanup()
        await drop_pg_database(url)


def test_an_unknown_deployment_key_is_refused_naming_the_key() -> None:
    config = {
        "providers": {"p": {"wire": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": [{"name": "m", "deployments": [{"provider": "p", "rpn": 100}]}],
    }
    with pytest.raises(ConfigError, match="rpn"):
        load_settings(env={}, overrides=config)
    config["models"][0]["deployments"][0] = {"provider": "p", "rpm": 0}
    with pytest.raises(ConfigError, match="rpm must be a positive integer"):
        load_settings(env={}, overrides=config)
