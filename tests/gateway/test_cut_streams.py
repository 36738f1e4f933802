"""A stream cut before its end (the client leaves, or the upstream drops it) is billed on a
plan as on a wallet: its estimated usage is capped at the bound its holds were taken for,
and it leaves the usage events a plan bills from, as a finished request does."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from faregate.store.tables.metering import requests
from tests.gateway.conftest import Running, gateway_config, start_gateway
from tests.gateway.test_billing_e2e import create_plan_and_subscriptions, subscription_start
from tests.gateway.test_wallets_bounds import read_then_leave
from tests.stored_events import events_of_request

MAX_TOKENS = 40
BODY = {
    "model": "mistral-small",
    "max_tokens": MAX_TOKENS,
    "messages": [{"role": "user", "content": "tell me a story"}],
}


@pytest.fixture
async def gw(tmp_path: Path, mock: MockServer) -> Any:
    models = gateway_config(mock.url)["models"] + [
        {"name": "mistral-small", "deployments": [{"provider": "compat", "model": "mistral-small"}]}
    ]
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    running = await start_gateway(tmp_path, url, mock, {"models": models})
    await create_plan_and_subscriptions(running, subscription_start())
    yield running
    await running.runner.cleanup()


async def _stream_then_leave(gw: Running, pieces: int) -> tuple[str, str]:
    """Read `pieces` chunks of text of a stream, then leave: (request id, the text)."""
    return await read_then_leave(gw, {**BODY, "stream": True}, pieces)


async def _record_and_events(gw: Running, request_id: str) -> tuple[Any, list[Any]]:
    """The request's record and events, once it is recorded (a client that left is noticed
    at the next chunk the gateway writes)."""
    for _ in range(200):
        await gw.services.writer.flush()
        async with gw.services.engine.connect() as conn:
            record = (
                await conn.execute(select(requests).where(requests.c.id == request_id))
            ).first()
            if record is not None:
                return record, await events_of_request(conn, request_id)
        await asyncio.sleep(0.025)
    raise AssertionError(f"{request_id} was never recorded")


async def test_a_stream_the_client_cuts_near_its_end_stays_within_its_bound_and_is_billed(
    gw: Running, mock: MockServer
) -> None:
    mock.config.deployments["compat"] = MockBehaviour(chunk_delay=0.05, output_tokens=MAX_TOKENS)
    request_id, text = await _stream_then_leave(gw, MAX_TOKENS - 2)
    assert -(-len(text) // 4) > MAX_TOKENS  # the text at four characters a token: past the bound
    record, rows = await _record_and_events(gw, request_id)
    assert record.status == 499 and record.usage_estimated
    assert record.output_tokens == MAX_TOKENS  # capped: it was 1.4 times this
    by_code = {(r["code"], r["properties"].get("type")): r for r in rows}
    assert set(by_code) == {("requests", None), ("tokens", "input"), ("tokens", "output")}
    output = by_code[("tokens", "output")]["properties"]
    assert (output["tokens"], output["estimated"]) == (MAX_TOKENS, True)
    assert by_code[("tokens", "input")]["properties"]["tokens"] == record.input_tokens
    assert record.price_nanos > 0


async def test_a_stream_the_upstream_drops_leaves_its_events(gw: Running, mock: MockServer) -> None:
    mock.config.deployments["compat"] = MockBehaviour(disconnect_after_chunks=5)
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{gw.url}/v1/chat/completions",
            json={**BODY, "stream": True},
            headers={"Authorization": f"Bearer {gw.key}"},
        ) as r,
    ):
        request_id = r.headers["x-faregate-request-id"]
        raw = await r.read()
    assert b"upstream_disconnected" in raw
    record, rows = await _record_and_events(gw, request_id)
    assert record.status == 502 and record.usage_estimated and record.output_tokens > 0
    tokens = {
        r["properties"]["type"]: r["properties"]["tokens"] for r in rows if r["code"] == "tokens"
    }
    assert tokens == {"input": record.input_tokens, "output": record.output_tokens}


async def test_a_request_that_failed_before_any_answer_leaves_no_events(
    gw: Running, mock: MockServer
) -> None:
    mock.config.deployments["compat"] = MockBehaviour(bad_request_rate=1.0)
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "mistral-small", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {gw.key}"},
        ) as r,
    ):
        assert r.status == 400
        request_id = r.headers["x-faregate-request-id"]
    record, rows = await _record_and_events(gw, request_id)
    assert record.status == 400 and record.price_nanos == 0 and rows == []
