"""Breakers, Retry-After cooldowns, deadlines and response headers through the running
gateway, with the mock provider's fault injection. Health runs on a hand-driven clock, so
cooldowns pass without sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from sqlalchemy import select

from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from faregate.store.tables.metering import requests as requests_table
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway
from tests.webhooks.receiver import Receiver

BODY = {"model": "flaky", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
PRIMARY, BACKUP = "flaky-primary", "flaky-backup"


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _config(mock_url: str, **routing: Any) -> dict[str, Any]:
    def provider(name: str) -> dict[str, str]:
        return {"wire": "openai", "base_url": f"{mock_url}/d/{name}/v1", "api_key": "k"}

    return {
        "providers": {PRIMARY: provider(PRIMARY), BACKUP: provider(BACKUP)},
        "models": [
            {
                "name": "flaky",
                "strategy": "priority",
                "deployments": [
                    {"id": PRIMARY, "provider": PRIMARY, "model": "gpt-4o-mini"},
                    {"id": BACKUP, "provider": BACKUP, "model": "gpt-4o-mini"},
                ],
            }
        ],
        "routing": routing,
        "pricing": {"markup": "1.25"},
    }


@pytest.fixture
async def clock() -> Clock:
    return Clock()


async def _start(
    tmp_path: Path, mock: MockServer, clock: Clock, hook_url: str | None = None, **routing: Any
) -> Running:
    config = _config(mock.url, **routing)
    if hook_url:
        config["webhooks"] = {"endpoints": [hook_url], "poll_seconds": 0.05}
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    gw.services.health._clock = clock  # the registry reads time only through this
    return gw


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _chat(s: aiohttp.ClientSession, gw: Running, body: dict[str, Any] = BODY) -> Any:
    async with s.post(
        f"{gw.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {gw.key}"}
    ) as r:
        return r.status, dict(r.headers), await r.json()


async def _health(s: aiohttp.ClientSession, gw: Running) -> dict[str, dict[str, Any]]:
    async with s.get(
        f"{gw.url}/api/v1/deployments/health", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ) as r:
        assert r.status == 200
        return {row["deployment"]: row for row in (await r.json())["deployments"]}


async def test_the_breaker_opens_rests_probes_and_closes(
    tmp_path: Path,
    mock: MockServer,
    clock: Clock,
    session: aiohttp.ClientSession,
    receiver: Receiver,
) -> None:
    mock.config.deployments[PRIMARY] = MockBehaviour(error_rate=1.0)
    gw = await _start(
        tmp_path,
        mock,
        clock,
        receiver.url,
        breaker={"failure_threshold": 3, "cooldown_seconds": 30},
    )
    try:
        for _ in range(3):  # three failures on the primary, each rescued by the backup
            status, headers, _ = await _chat(session, gw)
            assert status == 200
            assert headers["x-faregate-deployment"] == BACKUP
            assert headers["x-faregate-attempts"] == "2"
        assert mock.stats.requests_for(deployment=PRIMARY) == 3
        health = await _health(session, gw)
        assert health[PRIMARY]["state"] == "open"
        assert health[PRIMARY]["available_in_seconds"] == 30

        clock.advance(29)  # still open: no traffic reaches the primary
        for _ in range(10):
            status, headers, _ = await _chat(session, gw)
            assert (status, headers["x-faregate-attempts"]) == (200, "1")
        assert mock.stats.requests_for(deployment=PRIMARY) == 3

        clock.advance(1)  # cooldown over: half-open, one probe goes to the healed primary
        mock.config.deployments[PRIMARY] = MockBehaviour()
        assert (await _health(session, gw))[PRIMARY]["state"] == "half_open"
        status, headers, _ = await _chat(session, gw)
        assert (status, headers["x-faregate-deployment"]) == (200, PRIMARY)
        assert mock.stats.requests_for(deployment=PRIMARY) == 4
        assert (await _health(session, gw))[PRIMARY]["state"] == "closed"

        # The outage and the recovery each reached the webhook endpoint, signed.
        delivered = [d.json for d in await receiver.wait_for(2)]
        assert [(w["webhook_type"], w["alert"]["alert_type"]) for w in delivered] == [
            ("alert.triggered", "provider.outage"),
            ("alert.triggered", "provider.recovered"),
        ]
        outage = delivered[0]["alert"]
        assert outage["deployment"] == PRIMARY and outage["state"] == "open"
        assert outage["provider"] == PRIMARY and outage["model"] == "flaky"
        assert outage["cooldown_seconds"] == 30 and outage["triggered_at"]
        assert delivered[1]["alert"]["state"] == "closed"
    finally:
        await gw.runner.cleanup()


async def test_a_half_open_probe_that_fails_opens_the_breaker_again(
    tmp_path: Path, mock: MockServer, clock: Clock, session: aiohttp.ClientSession
) -> None:
    mock.config.deployments[PRIMARY] = MockBehaviour(error_rate=1.0)
    gw = await _start(
        tmp_path, mock, clock, breaker={"failure_threshold": 2, "cooldown_seconds": 5}
    )
    try:
        for _ in range(2):
            await _chat(session, gw)
        clock.advance(5)
        status, headers, _ = await _chat(session, gw)  # the probe fails, the backup answers
        assert (status, headers["x-faregate-attempts"]) == (200, "2")
        assert mock.stats.requests_for(deployment=PRIMARY) == 3
        assert (await _health(session, gw))[PRIMARY]["state"] == "open"
        await _chat(session, gw)
        assert mock.stats.requests_for(deployment=PRIMARY) == 3
    finally:
        await gw.runner.cleanup()


@pytest.mark.parametrize("with_ms", [True, False], ids=["retry-after-ms", "retry-after-only"])
async def test_a_429_with_retry_after_2_keeps_traffic_off_that_deployment_for_2_seconds(
    tmp_path: Path,
    mock: MockServer,
    clock: Clock,
    session: aiohttp.ClientSession,
    with_ms: bool,
) -> None:
    # Without `retry-after-ms` the plain `Retry-After: 2` header alone must be honoured.
    mock.config.deployments[PRIMARY] = MockBehaviour(
        rate_limit_rate=1.0, retry_after=2, retry_after_ms=with_ms
    )
    gw = await _start(tmp_path, mock, clock)
    try:
        status, headers, _ = await _chat(session, gw)
        assert (status, headers["x-faregate-deployment"]) == (200, BACKUP)
        assert headers["x-faregate-attempts"] == "2"
        health = await _health(session, gw)
        assert health[PRIMARY]["state"] == "closed"  # a cooldown, not an outage
        assert health[PRIMARY]["cooldown_until"] is not None
        assert health[PRIMARY]["available_in_seconds"] == 2

        mock.config.deployments[PRIMARY] = MockBehaviour()  # it would answer now…
        clock.advance(1.9)
        for _ in range(5):  # …but it asked for 2 s
            status, headers, _ = await _chat(session, gw)
            assert (status, headers["x-faregate-deployment"]) == (200, BACKUP)
            assert headers["x-faregate-attempts"] == "1"
        assert mock.stats.requests_for(deployment=PRIMARY) == 1

        clock.advance(0.1)
        status, headers, _ = await _chat(session, gw)
        assert (status, headers["x-faregate-deployment"]) == (200, PRIMARY)
        assert mock.stats.requests_for(deployment=PRIMARY) == 2
    finally:
        await gw.runner.cleanup()


async def test_a_hanging_upstream_is_cut_at_the_request_deadline(
    tmp_path: Path, mock: MockServer, clock: Clock, session: aiohttp.ClientSession
) -> None:
    mock.config.deployments[PRIMARY] = MockBehaviour(hang=True)
    mock.config.deployments[BACKUP] = MockBehaviour(hang=True)
    config = _config(mock.url)
    config["server"] = {"request_timeout": 1.0}
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    try:
        started = time.monotonic()
        status, headers, body = await _chat(session, gw)
        elapsed = time.monotonic() - started
        assert status == 504
        assert body["error"]["code"] == "upstream_timeout"
        assert headers["x-faregate-request-id"].startswith("req_")
        # Cut at the 1 s deadline of the whole request: not earlier, and not after a deadline
        # per deployment (both hang: that would take 2 s) or the upstream's endless hang.
        assert 0.95 <= elapsed < 1.9, elapsed
    finally:
        await gw.runner.cleanup()


async def _stream_events(s: aiohttp.ClientSession, gw: Running) -> tuple[int, str, list[Any]]:
    async with s.post(
        f"{gw.url}/v1/chat/completions",
        json={**BODY, "max_tokens": 20, "stream": True},
        headers={"Authorization": f"Bearer {gw.key}"},
    ) as r:
        raw = await r.read()
        deployment = r.headers.get("x-faregate-deployment", "")
    lines = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    return r.status, deployment, [e if e == "[DONE]" else orjson.loads(e) for e in lines]


async def test_streams_that_break_after_their_first_chunk_open_the_breaker(
    tmp_path: Path, mock: MockServer, clock: Clock, session: aiohttp.ClientSession
) -> None:
    mock.config.deployments[PRIMARY] = MockBehaviour(disconnect_after_chunks=3)
    gw = await _start(
        tmp_path, mock, clock, breaker={"failure_threshold": 3, "cooldown_seconds": 30}
    )
    try:
        for n in range(3):
            status, deployment, events = await _stream_events(session, gw)
            assert (status, deployment) == (200, PRIMARY)
            assert "error" in events[-2] and events[-1] == "[DONE]"
            assert any(
                e["choices"] and e["choices"][0]["delta"].get("content") for e in events[:-2]
            )
            state = (await _health(session, gw))[PRIMARY]
            assert state["state"] == ("open" if n == 2 else "closed")
            assert state["consecutive_failures"] == (0 if n == 2 else n + 1)
        assert mock.stats.requests_for(deployment=BACKUP) == 0  # none was retried

        status, deployment, events = await _stream_events(session, gw)
        assert (status, deployment) == (200, BACKUP)  # the open breaker keeps streams off it
        assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1])
        assert mock.stats.requests_for(deployment=PRIMARY) == 3

        clock.advance(30)  # the half-open probe is a stream too: it closes only once it ends
        mock.config.deployments[PRIMARY] = MockBehaviour()
        status, deployment, events = await _stream_events(session, gw)
        assert (status, deployment) == (200, PRIMARY)
        assert (await _health(session, gw))[PRIMARY]["state"] == "closed"
    finally:
        await gw.runner.cleanup()


async def test_a_probe_stream_the_client_leaves_gives_its_slot_back_without_a_verdict(
    tmp_path: Path, mock: MockServer, clock: Clock, session: aiohttp.ClientSession
) -> None:
    mock.config.deployments[PRIMARY] = MockBehaviour(error_rate=1.0)
    gw = await _start(
        tmp_path, mock, clock, breaker={"failure_threshold": 2, "cooldown_seconds": 10}
    )
    try:
        for _ in range(2):
            await _chat(session, gw)
        clock.advance(10)
        mock.config.deployments[PRIMARY] = MockBehaviour(chunk_delay=0.05, output_tokens=40)
        r = await session.post(
            f"{gw.url}/v1/chat/completions",
            json={**BODY, "max_tokens": 40, "stream": True},
            headers={"Authorization": f"Bearer {gw.key}"},
        )
        assert r.headers["x-faregate-deployment"] == PRIMARY  # the half-open probe
        await r.content.readline()
        assert (await _health(session, gw))[PRIMARY]["available_in_seconds"] > 0  # in flight
        r.close()  # the client leaves after the first chunk
        for _ in range(100):
            state = (await _health(session, gw))[PRIMARY]
            if state["available_in_seconds"] == 0:
                break
            await asyncio.sleep(0.02)
        assert (state["state"], state["available_in_seconds"]) == ("half_open", 0)
        status, headers, _ = await _chat(session, gw)  # the next request probes again
        assert (status, headers["x-faregate-deployment"]) == (200, PRIMARY)
        assert (await _health(session, gw))[PRIMARY]["state"] == "closed"
    finally:
        await gw.runner.cleanup()


async def test_a_stream_that_completes_counts_as_a_success(
    tmp_path: Path, mock: MockServer, clock: Clock, session: aiohttp.ClientSession
) -> None:
    gw = await _start(tmp_path, mock, clock, breaker={"failure_threshold": 2})
    try:
        mock.config.deployments[PRIMARY] = MockBehaviour(disconnect_after_chunks=2)
        await _stream_events(session, gw)
        mock.config.deployments[PRIMARY] = MockBehaviour()
        await _stream_events(session, gw)  # resets the count of consecutive failures
        mock.config.deployments[PRIMARY] = MockBehaviour(disconnect_after_chunks=2)
        await _stream_events(session, gw)
        state = (await _health(session, gw))[PRIMARY]
        assert (state["state"], state["consecutive_failures"]) == ("closed", 1)
    finally:
        await gw.runner.cleanup()


async def test_a_deployment_timeout_fails_over_within_the_deadline(
    tmp_path: Path, mock: MockServer, clock: Clock, session: aiohttp.ClientSession
) -> None:
    mock.config.deployments[PRIMARY] = MockBehaviour(hang=True)
    config = _config(mock.url)
    config["server"] = {"request_timeout": 5}
    config["models"][0]["deployments"][0]["timeout"] = 0.2
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    try:
        status, headers, _ = await _chat(session, gw)
        assert (status, headers["x-faregate-deployment"]) == (200, BACKUP)
        assert headers["x-faregate-attempts"] == "2"
    finally:
        await gw.runner.cleanup()


async def test_response_headers_name_the_request_deployment_cost_price_and_attempts(
    tmp_path: Path, mock: MockServer, clock: Clock, session: aiohttp.ClientSession
) -> None:
    mock.config.deployments[PRIMARY] = MockBehaviour(error_rate=1.0)
    config = _config(mock.url)
    config["prices"] = {
        "models": [
            {
                "provider": "xtest",
                "model": "hdr-model",
                "effective_from": "2020-01-01",
                "input": 2,
                "output": 8,
            }
        ]
    }
    for d in config["models"][0]["deployments"]:
        d["price_key"] = "hdr-model"
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    try:
        status, headers, body = await _chat(session, gw)
        assert status == 200
        usage = body["usage"]
        cost = (Decimal(usage["prompt_tokens"]) * 2 + Decimal(usage["completion_tokens"]) * 8) / (
            10**6
        )
        assert headers["x-faregate-deployment"] == BACKUP
        assert headers["x-faregate-attempts"] == "2"
        assert Decimal(headers["x-faregate-cost"]) == cost
        assert Decimal(headers["x-faregate-price"]) == cost * Decimal("1.25")
        request_id = headers["x-faregate-request-id"]
        row = await _stored_request(gw, request_id)
        assert row["deployment"] == BACKUP and row["attempts"] == 2
        assert row["cost_nanos"] == int(cost * 10**9)
    finally:
        await gw.runner.cleanup()


async def _stored_request(gw: Running, request_id: str) -> dict[str, Any]:
    for _ in range(100):  # the usage writer inserts in batches
        async with gw.services.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(requests_table).where(requests_table.c.id == request_id)
                    )
                )
                .mappings()
                .first()
            )
        if row is not None:
            return dict(row)
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} was never stored")


async def test_a_breaker_opened_on_one_replica_keeps_the_other_off_and_alerts_once(
    tmp_path: Path,
    mock: MockServer,
    pg_url: str,
    redis_url: str,
    redis_prefix: str,
    receiver: Receiver,
    session: aiohttp.ClientSession,
) -> None:
    mock.config.deployments[PRIMARY] = MockBehaviour(error_rate=1.0)
    config = _config(mock.url, breaker={"failure_threshold": 3, "cooldown_seconds": 60})
    config |= {
        "redis_url": redis_url,
        "server": {"redis_prefix": redis_prefix},
        "webhooks": {"endpoints": [receiver.url], "poll_seconds": 0.05},
    }
    first = await start_gateway(tmp_path / "1", pg_url, mock, config)
    second = await start_gateway(tmp_path / "2", pg_url, mock, config, key_for=first)
    try:
        for _ in range(3):
            assert (await _chat(session, first))[0] == 200
        assert (await _health(session, first))[PRIMARY]["state"] == "open"
        for _ in range(200):  # replicas exchange breaker state every 250 ms
            if (await _health(session, second))[PRIMARY]["state"] == "open":
                break
            await asyncio.sleep(0.05)
        assert (await _health(session, second))[PRIMARY]["state"] == "open"
        for _ in range(5):
            status, headers, _ = await _chat(session, second)
            assert (status, headers["x-faregate-attempts"]) == (200, "1")
        assert mock.stats.requests_for(deployment=PRIMARY) == 3
        [alert] = await receiver.wait_for(1)
        await asyncio.sleep(0.5)  # the other replica had time to send its own, if it would
        assert len(receiver.accepted) == 1
        assert alert.json["alert"]["alert_type"] == "provider.outage"
    finally:
        await second.runner.cleanup()
        await first.runner.cleanup()
