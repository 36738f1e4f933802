"""A stream's cost, price and attempts reach the client at its end, as an SSE comment block
before the last event (the headers left before they were known), on the OpenAI and the
Anthropic wire; the official SDKs read those streams unchanged."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
from sqlalchemy import select

from faregate.mockprovider.server import MockServer
from faregate.store.tables.metering import requests as requests_table
from tests.gateway.conftest import Running, start_gateway

CHAT = {
    "model": "gpt-4o-mini",
    "max_tokens": 6,
    "stream": True,
    "messages": [{"role": "user", "content": "hello there"}],
}
NANO = Decimal("1e-9")


async def _start(tmp_path: Path, mock: MockServer) -> Running:
    extra = {"pricing": {"markup": "1.25"}}
    return await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, extra)


async def _stored(gw: Running, request_id: str) -> dict[str, Any]:
    for _ in range(100):  # the usage writer inserts in batches
        async with gw.services.engine.connect() as conn:
            query = select(requests_table).where(requests_table.c.id == request_id)
            row = (await conn.execute(query)).mappings().first()
        if row is not None:
            return dict(row)
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} was never stored")


def _comments(lines: list[str]) -> dict[str, str]:
    pairs = (line[2:].split(" ", 1) for line in lines if line.startswith(": x-faregate-"))
    return dict(pairs)


async def _raw(gw: Running, path: str, body: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    headers = {"Authorization": f"Bearer {gw.key}", "x-api-key": gw.key}
    async with aiohttp.ClientSession() as s, s.post(gw.url + path, json=body, headers=headers) as r:
        assert r.status == 200
        return dict(r.headers), (await r.read()).decode().split("\n")


async def test_an_openai_stream_ends_with_its_cost_and_price_before_done(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _start(tmp_path, mock)
    try:
        headers, lines = await _raw(gw, "/v1/chat/completions", CHAT)
        assert "x-faregate-cost" not in headers  # unknown when the headers left
        found = _comments(lines)
        assert set(found) == {"x-faregate-cost", "x-faregate-price", "x-faregate-attempts"}
        cost, price = Decimal(found["x-faregate-cost"]), Decimal(found["x-faregate-price"])
        assert cost > 0 and price == cost * Decimal("1.25")
        assert found["x-faregate-attempts"] == "1"
        # Its own block, right before the final [DONE].
        done = lines.index("data: [DONE]")
        assert lines[done - 4 : done] == [
            f": x-faregate-cost {found['x-faregate-cost']}",
            f": x-faregate-price {found['x-faregate-price']}",
            ": x-faregate-attempts 1",
            "",
        ]
        row = await _stored(gw, headers["x-faregate-request-id"])
        assert row["cost_nanos"] == cost / NANO
        assert abs(row["price_nanos"] - price / NANO) <= 1  # stored in whole nanos
    finally:
        await gw.runner.cleanup()


async def test_an_anthropic_stream_sends_its_cost_before_message_stop(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _start(tmp_path, mock)
    try:
        body = {**CHAT, "model": "claude-sonnet-4"}
        headers, lines = await _raw(gw, "/v1/messages", body)
        found = _comments(lines)
        cost = Decimal(found["x-faregate-cost"])
        assert cost > 0 and Decimal(found["x-faregate-price"]) == cost * Decimal("1.25")
        at = lines.index(f": x-faregate-cost {found['x-faregate-cost']}")
        assert lines[at + 4] == "event: message_stop"
        row = await _stored(gw, headers["x-faregate-request-id"])
        assert row["cost_nanos"] == cost / NANO
    finally:
        await gw.runner.cleanup()


async def test_the_official_sdks_stream_unchanged_past_the_cost_comment(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _start(tmp_path, mock)
    try:
        client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            max_tokens=6,
            messages=[{"role": "user", "content": "hello there"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(text.split()) == 6
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
        await client.close()

        claude = anthropic.AsyncAnthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
        async with claude.messages.stream(
            model="claude-sonnet-4",
            max_tokens=6,
            messages=[{"role": "user", "content": "hello there"}],
        ) as events:
            message = await events.get_final_message()
        assert message.usage.output_tokens == 6 and message.stop_reason == "max_tokens"
        await claude.close()
    finally:
        await gw.runner.cleanup()
