"""Failover through the running gateway, with the mock provider's fault injection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson

from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import start_gateway

BODY = {"model": "flaky", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def _flaky_group(mock_url: str) -> dict:
    return {
        "providers": {
            "primary": {"wire": "openai", "base_url": f"{mock_url}/d/primary/v1", "api_key": "k"},
            "backup": {"wire": "anthropic", "base_url": f"{mock_url}/d/backup", "api_key": "k"},
            "openai": {"wire": "openai", "base_url": f"{mock_url}/d/openai/v1", "api_key": "k"},
        },
        "models": [
            {
                "name": "flaky",
                "strategy": "priority",
                "deployments": [
                    {"provider": "primary", "model": "gpt-4o-mini"},
                    {"provider": "backup", "model": "claude-sonnet-4"},
                ],
            },
            {
                "name": "gpt-4o-mini",
                "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}],
            },
        ],
    }


async def test_a_primary_failing_30_percent_loses_no_request(
    tmp_path: Path, mock: MockServer
) -> None:
    mock.config.deployments["primary"] = MockBehaviour(error_rate=0.3)
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _flaky_group(mock.url)
    )
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {gw.key}"}) as s:
            sem = asyncio.Semaphore(32)

            async def one() -> tuple[int, str]:
                async with sem, s.post(f"{gw.url}/v1/chat/completions", json=BODY) as r:
                    await r.read()
                    return r.status, r.headers.get("x-faregate-attempts", "")

            results = await asyncio.gather(*(one() for _ in range(1000)))
        assert [status for status, _ in results].count(200) == 1000
        assert any(attempts != "1" for _, attempts in results)  # fallbacks did happen
        assert mock.stats.requests_for(deployment="backup") > 0
    finally:
        await gw.runner.cleanup()


async def test_a_stream_that_breaks_after_its_first_chunk_ends_with_an_error_event(
    tmp_path: Path, mock: MockServer
) -> None:
    mock.config.deployments["primary"] = MockBehaviour(disconnect_after_chunks=3)
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _flaky_group(mock.url)
    )
    try:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {gw.key}"}) as s,
            s.post(f"{gw.url}/v1/chat/completions", json={**BODY, "stream": True}) as r,
        ):
            assert r.status == 200
            raw = await r.read()
        events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        content = [orjson.loads(e)["choices"] for e in events[:-2]]
        assert any(c and c[0]["delta"].get("content") for c in content)  # before the error
        error = orjson.loads(events[-2])["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert mock.stats.requests_for(deployment="backup") == 0  # not retried after the first byte
    finally:
        await gw.runner.cleanup()
