"""A provider's `max_connections`: the gateway never holds more connections to its host,
and requests beyond them wait for one instead of failing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from faregate.config import ConfigError, load_settings
from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer

from .conftest import ADMIN_KEY, gateway_config, start_gateway


def _established_to(port: int) -> int:
    """TCP connections on this machine in state ESTABLISHED whose remote port is `port`
    (the client ends of connections to a loopback server), read from the kernel's table."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


async def test_requests_beyond_a_providers_max_connections_wait_for_one(
    tmp_path: Path, mock: MockServer
) -> None:
    providers = gateway_config(mock.url)["providers"]
    providers["openai"]["max_connections"] = 3
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", mock, {"providers": providers}
    )
    mock.config.deployments["openai"] = MockBehaviour(latency=0.1)
    port = urlsplit(mock.url).port
    assert port is not None
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _established_to(port))
            await asyncio.sleep(0.005)

    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    watcher = asyncio.create_task(watch())
    try:
        calls = asyncio.gather(
            *(
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {i}"}]
                )
                for i in range(24)
            )
        )
        # Scrape until the others queue behind the 3 requests upstream (on a loaded machine
        # the first request may take longer than any fixed pause to get there).
        gauges: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while not calls.done() and time.monotonic() < deadline:
            gauges = await _upstream_gauges(gw.url, f"http://127.0.0.1:{port}")
            if gauges.get("faregate_upstream_connection_waiters", 0) >= 1:
                break
            await asyncio.sleep(0.01)
        replies = await calls
        assert gauges["faregate_upstream_connections"] == 3
        assert gauges["faregate_upstream_connection_waiters"] >= 1
        after = await _upstream_gauges(gw.url, f"http://127.0.0.1:{port}")
        assert after == {
            "faregate_upstream_connections": 3,  # kept alive for the next requests
            "faregate_upstream_connection_waiters": 0,
        }
    finally:
        done.set()
        await watcher
        await client.close()
        await gw.runner.cleanup()
    assert all(r.choices[0].message.content for r in replies)
    assert 1 <= peak <= 3  # 24 requests of 100 ms each, never more than 3 connections
    assert mock.stats.requests_for(deployment="openai") == 24


async def _upstream_gauges(url: str, origin: str) -> dict[str, float]:
    """The upstream pool gauges of `origin`, scraped from the gateway's /metrics."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics", headers=headers) as r:
        text = await r.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("faregate_upstream_") and sample.labels.get("origin") == origin
    }


@pytest.mark.parametrize("value", [0, -1, "ten", 2.5, True])
def test_max_connections_must_be_a_whole_number_of_at_least_one(value: object) -> None:
    config = gateway_config("http://127.0.0.1:9")
    config["providers"]["openai"]["max_connections"] = value
    with pytest.raises(ConfigError, match="max_connections"):
        load_settings(env={}, overrides=config)


def test_max_connections_may_come_from_an_environment_variable() -> None:
    config = gateway_config("http://127.0.0.1:9")
    config["providers"]["openai"]["max_connections"] = "${OPENAI_CONNECTIONS}"
    settings = load_settings(env={"OPENAI_CONNECTIONS": "64"}, overrides=config)
    assert settings.providers["openai"].max_connections == 64


async def test_a_provider_refusing_its_options_stops_start_up_and_closes_its_session(
    tmp_path: Path, mock: MockServer, opened_sessions: list[aiohttp.ClientSession]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    providers = gateway_config(mock.url)["providers"]
    providers["anthropic"]["thinking"] = "always"
    extra = {"providers": providers}
    with pytest.raises(ConfigError, match="provider 'anthropic': thinking must be"):
        await start_gateway(tmp_path, url, mock, extra)
    assert opened_sessions and all(session.closed for session in opened_sessions)
